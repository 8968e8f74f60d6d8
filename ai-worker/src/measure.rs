//! Measurements of one segment on the source volume: volume, components, longest diameters
//! (exact, over the convex hulls of the slices) and intensity statistics.

use crate::volume::Volume;

/// What the worker measures for each segment and reports in the TID 1500 SR.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentMeasurements {
    /// Volume in millilitres (voxel count times voxel volume).
    pub volume_ml: f64,
    pub voxel_count: u64,
    /// Number of 26-connected components.
    pub components: u32,
    /// Longest distance between two voxel centres of the segment, in mm.
    pub max_diameter_3d_mm: f64,
    /// Longest distance between two voxel centres within one slice, in mm.
    pub max_diameter_inplane_mm: f64,
    /// Where that longest in-plane diameter lies (None for an empty mask). The report draws it
    /// as a line on that slice.
    #[serde(default)]
    pub max_diameter_inplane_line: Option<InPlaneLine>,
    /// Source intensity (HU for CT) over the segment's voxels.
    pub mean: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
}

/// Measures a mask (`[slice][row][col]`, the volume's voxel order) on its source volume.
/// An empty mask measures 0 everywhere.
pub fn measure(mask: &[bool], volume: &Volume) -> SegmentMeasurements {
    let shape = volume.shape();
    assert_eq!(
        mask.len(),
        volume.voxels.len(),
        "mask and volume differ in size"
    );
    let voxel_count = mask.iter().filter(|&&m| m).count() as u64;
    let (mean, std_dev, min, max) = intensity_stats(mask, &volume.voxels);
    let d = diameters(mask, shape, volume.geometry.voxel_size_mm());
    SegmentMeasurements {
        volume_ml: voxel_count as f64 * volume.geometry.voxel_volume_mm3() / 1000.0,
        voxel_count,
        components: crate::postprocess::count_components(mask, shape),
        max_diameter_3d_mm: d.max_3d_mm,
        max_diameter_inplane_mm: d.max_inplane_mm,
        max_diameter_inplane_line: d.inplane_line,
        mean,
        std_dev,
        min,
        max,
    }
}

/// Mean, population standard deviation, minimum and maximum of `values` under `mask`.
pub fn intensity_stats(mask: &[bool], values: &[f32]) -> (f64, f64, f64, f64) {
    let (mut n, mut sum, mut min, mut max) = (0u64, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for (&m, &v) in mask.iter().zip(values) {
        if m {
            let v = f64::from(v);
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
    }
    if n == 0 {
        return (0.0, 0.0, 0.0, 0.0);
    }
    let mean = sum / n as f64;
    let var = mask
        .iter()
        .zip(values)
        .filter(|(&m, _)| m)
        .map(|(_, &v)| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    (mean, var.sqrt(), min, max)
}

/// Longest distances between voxel centres of a mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diameters {
    pub max_3d_mm: f64,
    /// Within one slice.
    pub max_inplane_mm: f64,
    /// The two voxel centres at that in-plane distance, on the first slice (in volume order)
    /// where it is reached; None for an empty mask.
    pub inplane_line: Option<InPlaneLine>,
}

/// A line between two voxel centres of one slice: `slice` in volume order, the ends as
/// `[row, column]` indices into that slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InPlaneLine {
    pub slice: usize,
    pub from: [usize; 2],
    pub to: [usize; 2],
}

/// The convex hull of one slice of a mask, in (row, col) voxel indices.
struct SliceHull {
    slice: usize,
    vertices: Vec<(i64, i64)>,
    /// Bounding box in mm: row min/max, col min/max.
    bbox: [f64; 4],
}

/// Cross product of (a - o) and (b - o).
fn cross(o: (i64, i64), a: (i64, i64), b: (i64, i64)) -> i64 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// Andrew's monotone chain on points sorted by (row, col); collinear points dropped.
fn convex_hull(points: &[(i64, i64)]) -> Vec<(i64, i64)> {
    if points.len() <= 2 {
        return points.to_vec();
    }
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(i64, i64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop(); // the last point starts the other chain
    }
    hull
}

/// Exact longest 3-D and in-plane distances between voxel centres, with `voxel_size_mm` along
/// `[slice, row, col]` (the volume's axes are orthogonal).
///
/// The farthest pair of a point set are vertices of its convex hull, so only the hull vertices
/// of each slice are candidates (the row extremes first, then a 2-D hull with exact integer
/// arithmetic: a lattice polygon in an N x N grid has O(N^(2/3)) vertices). Slice pairs are
/// then visited in decreasing order of a bounding-box upper bound and the search stops when the
/// bound falls below the best distance found.
pub fn diameters(mask: &[bool], shape: [usize; 3], voxel_size_mm: [f64; 3]) -> Diameters {
    let [ns, nr, nc] = shape;
    assert_eq!(
        mask.len(),
        ns * nr * nc,
        "mask length does not match its shape"
    );
    let [dz, dr, dc] = voxel_size_mm;
    let mut hulls = Vec::new();
    let mut points = Vec::new();
    for s in 0..ns {
        points.clear();
        for r in 0..nr {
            let row = &mask[(s * nr + r) * nc..(s * nr + r + 1) * nc];
            if let (Some(first), Some(last)) =
                (row.iter().position(|&m| m), row.iter().rposition(|&m| m))
            {
                points.push((r as i64, first as i64));
                if last != first {
                    points.push((r as i64, last as i64));
                }
            }
        }
        if points.is_empty() {
            continue;
        }
        let vertices = convex_hull(&points);
        let (mut rmin, mut rmax, mut cmin, mut cmax) = (i64::MAX, i64::MIN, i64::MAX, i64::MIN);
        for &(r, c) in &vertices {
            rmin = rmin.min(r);
            rmax = rmax.max(r);
            cmin = cmin.min(c);
            cmax = cmax.max(c);
        }
        hulls.push(SliceHull {
            slice: s,
            vertices,
            bbox: [
                rmin as f64 * dr,
                rmax as f64 * dr,
                cmin as f64 * dc,
                cmax as f64 * dc,
            ],
        });
    }
    // The farthest pair of vertices of two hulls and its squared distance.
    let farthest = |a: &SliceHull, b: &SliceHull| {
        let z = (b.slice as f64 - a.slice as f64) * dz;
        let mut best = (-1.0f64, a.vertices[0], b.vertices[0]);
        for &(ra, ca) in &a.vertices {
            for &(rb, cb) in &b.vertices {
                let (y, x) = ((rb - ra) as f64 * dr, (cb - ca) as f64 * dc);
                let d = z * z + y * y + x * x;
                if d > best.0 {
                    best = (d, (ra, ca), (rb, cb));
                }
            }
        }
        best
    };
    let dist2 = |a: &SliceHull, b: &SliceHull| farthest(a, b).0;
    let mut best_inplane = 0.0f64;
    let mut inplane_line = None;
    for h in &hulls {
        let (d, from, to) = farthest(h, h);
        if inplane_line.is_none() || d > best_inplane {
            best_inplane = d;
            let index = |(r, c): (i64, i64)| [r as usize, c as usize];
            inplane_line = Some(InPlaneLine {
                slice: h.slice,
                from: index(from),
                to: index(to),
            });
        }
    }
    let mut pairs = Vec::new();
    for (i, a) in hulls.iter().enumerate() {
        for (j, b) in hulls.iter().enumerate().skip(i + 1) {
            let z = (b.slice - a.slice) as f64 * dz;
            let y = (a.bbox[1] - b.bbox[0]).max(b.bbox[1] - a.bbox[0]).max(0.0);
            let x = (a.bbox[3] - b.bbox[2]).max(b.bbox[3] - a.bbox[2]).max(0.0);
            pairs.push((z * z + y * y + x * x, i, j));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = best_inplane;
    for (bound, i, j) in pairs {
        if bound <= best {
            break;
        }
        best = best.max(dist2(&hulls[i], &hulls[j]));
    }
    Diameters {
        max_3d_mm: best.sqrt(),
        max_inplane_mm: best_inplane.sqrt(),
        inplane_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all voxel pairs, for small masks.
    fn brute(mask: &[bool], shape: [usize; 3], size: [f64; 3]) -> Diameters {
        let pts: Vec<[usize; 3]> = (0..mask.len())
            .filter(|&i| mask[i])
            .map(|i| {
                [
                    i / (shape[1] * shape[2]),
                    i / shape[2] % shape[1],
                    i % shape[2],
                ]
            })
            .collect();
        let (mut d3, mut d2) = (0.0f64, 0.0f64);
        for a in &pts {
            for b in &pts {
                let d: f64 = (0..3)
                    .map(|k| ((a[k] as f64 - b[k] as f64) * size[k]).powi(2))
                    .sum();
                d3 = d3.max(d);
                if a[0] == b[0] {
                    d2 = d2.max(d);
                }
            }
        }
        Diameters {
            max_3d_mm: d3.sqrt(),
            max_inplane_mm: d2.sqrt(),
            inplane_line: None,
        }
    }

    #[test]
    fn hull_search_equals_brute_force_on_random_blobs() {
        let shape = [7, 9, 11];
        let mut seed = 12345u64;
        for round in 0..40 {
            let mut mask = vec![false; shape.iter().product()];
            for m in mask.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *m = (seed >> 33) % 100 < 5 + round;
            }
            let size = [2.5, 0.7, 1.1];
            let fast = diameters(&mask, shape, size);
            let slow = brute(&mask, shape, size);
            assert!(
                (fast.max_3d_mm - slow.max_3d_mm).abs() < 1e-9,
                "{fast:?} {slow:?}"
            );
            assert!((fast.max_inplane_mm - slow.max_inplane_mm).abs() < 1e-9);
            // the line joins two voxels of the mask on one slice, and is as long as reported
            let line = fast.inplane_line.expect("non-empty mask");
            let voxel = |[r, c]: [usize; 2]| (line.slice * shape[1] + r) * shape[2] + c;
            assert!(mask[voxel(line.from)] && mask[voxel(line.to)]);
            let (y, x) = (
                (line.to[0] as f64 - line.from[0] as f64) * size[1],
                (line.to[1] as f64 - line.from[1] as f64) * size[2],
            );
            assert!(((y * y + x * x).sqrt() - fast.max_inplane_mm).abs() < 1e-9);
        }
    }

    #[test]
    fn no_line_for_an_empty_mask_and_a_point_for_one_voxel() {
        let mut mask = vec![false; 2 * 3 * 4];
        assert_eq!(diameters(&mask, [2, 3, 4], [1.0; 3]).inplane_line, None);
        mask[12 + 4 + 2] = true;
        let d = diameters(&mask, [2, 3, 4], [1.0; 3]);
        assert_eq!(
            d.inplane_line,
            Some(InPlaneLine {
                slice: 1,
                from: [1, 2],
                to: [1, 2]
            })
        );
        assert_eq!(d.max_inplane_mm, 0.0);
    }

    #[test]
    fn hull_of_collinear_and_single_points() {
        assert_eq!(convex_hull(&[(0, 0)]), vec![(0, 0)]);
        assert_eq!(convex_hull(&[(0, 0), (1, 1), (2, 2)]), vec![(0, 0), (2, 2)]);
        assert_eq!(
            convex_hull(&[(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)]),
            vec![(0, 0), (2, 0), (2, 2), (0, 2)]
        );
    }
}
