// uPlot (ui/vendor, from npm) with the console's dark colours.

const AXIS = { stroke: '#9ca3af', grid: { stroke: '#1e2a5a', width: 1 }, ticks: { stroke: '#1e2a5a', width: 1 } };

export function plot(container, { series, data, bars = false, height = 220, yLabel = '', xTime = true }) {
  const width = Math.max(320, Math.floor(container.getBoundingClientRect().width || 640) - 14);
  const opts = {
    width,
    height,
    scales: { x: { time: xTime } },
    axes: [{ ...AXIS }, { ...AXIS, label: yLabel, size: 60 }],
    series: [{}, ...series.map((s) => {
      const one = { stroke: '#5acce6', width: 2, points: { show: true, size: 7, fill: '#090c29', stroke: '#5acce6' } };
      if (bars) {
        one.fill = 'rgba(90,204,230,0.35)';
        one.points = { show: false };
        if (window.uPlot.paths && window.uPlot.paths.bars) one.paths = window.uPlot.paths.bars({ size: [0.7, 60] });
      }
      return { ...one, ...s };
    })],
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
  };
  // eslint-disable-next-line new-cap
  return new window.uPlot(opts, data, container);
}
