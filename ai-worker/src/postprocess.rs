//! Post-processing of binary masks on a `[slice][row][col]` grid (last index fastest):
//! 26-connected components, keep the largest, remove small ones, fill holes.
//!
//! Connectivity follows the usual digital-topology pairing: the foreground is 26-connected, so
//! the background it encloses is taken as 6-connected (3-D) or 4-connected (per slice), and a
//! one-voxel-thick diagonal wall still closes a hole.
//!
//! Components are found on runs (maximal stretches of equal voxels along a row) joined with a
//! union-find, so the cost follows the number of runs rather than of voxels: a 512 x 512 x 300
//! body mask is a few hundred thousand runs.

use crate::model::PostprocessSpec;

/// Which voxels touch: 26 (faces, edges, corners), 6 (faces), or 4 within a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connectivity {
    C26,
    C6,
    C4InSlice,
}

/// A stretch of voxels `c0..=c1` of row `row` (= slice * rows + row index).
#[derive(Debug, Clone, Copy)]
struct Run {
    row: usize,
    c0: usize,
    c1: usize,
}

/// 26-connected components of a mask.
#[derive(Debug, Clone)]
pub struct Components {
    shape: [usize; 3],
    runs: Vec<Run>,
    /// 1-based component of each run.
    run_label: Vec<u32>,
    /// Voxel count of component `k` at index `k - 1`; components are numbered in scan order
    /// of their first voxel.
    pub sizes: Vec<u64>,
}

impl Components {
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// 1-based number of the largest component (the first one found on a tie).
    pub fn largest(&self) -> Option<u32> {
        let mut best: Option<(u32, u64)> = None;
        for (k, &size) in self.sizes.iter().enumerate() {
            if best.is_none_or(|(_, b)| size > b) {
                best = Some((k as u32 + 1, size));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Per voxel: 0 for background, else the 1-based component number.
    pub fn labels(&self) -> Vec<u32> {
        let mut out = vec![0u32; self.shape.iter().product()];
        let nc = self.shape[2];
        for (run, &l) in self.runs.iter().zip(&self.run_label) {
            out[run.row * nc + run.c0..=run.row * nc + run.c1].fill(l);
        }
        out
    }

    /// The mask of the components for which `keep(label, size)` holds.
    pub fn select(&self, keep: impl Fn(u32, u64) -> bool) -> Vec<bool> {
        let mut out = vec![false; self.shape.iter().product()];
        let nc = self.shape[2];
        for (run, &l) in self.runs.iter().zip(&self.run_label) {
            if keep(l, self.sizes[l as usize - 1]) {
                out[run.row * nc + run.c0..=run.row * nc + run.c1].fill(true);
            }
        }
        out
    }
}

fn check(mask: &[bool], shape: [usize; 3]) {
    assert_eq!(
        mask.len(),
        shape.iter().product::<usize>(),
        "mask length does not match its shape"
    );
}

/// Runs of voxels equal to `value`, in scan order, and the index of each row's first run
/// (`row_start[row]..row_start[row + 1]`).
fn runs_of(mask: &[bool], shape: [usize; 3], value: bool) -> (Vec<Run>, Vec<usize>) {
    let nc = shape[2];
    let rows = shape[0] * shape[1];
    let mut runs = Vec::new();
    let mut row_start = Vec::with_capacity(rows + 1);
    for row in 0..rows {
        row_start.push(runs.len());
        let line = &mask[row * nc..(row + 1) * nc];
        let mut c = 0;
        while c < nc {
            if line[c] != value {
                c += 1;
                continue;
            }
            let c0 = c;
            while c < nc && line[c] == value {
                c += 1;
            }
            runs.push(Run { row, c0, c1: c - 1 });
        }
    }
    row_start.push(runs.len());
    (runs, row_start)
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

/// Union-find over the runs: the root run of each run's component.
fn join_runs(
    runs: &[Run],
    row_start: &[usize],
    shape: [usize; 3],
    connectivity: Connectivity,
) -> Vec<u32> {
    let nr = shape[1];
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    // columns of a run in a neighbouring row that touch: overlap, or diagonal with 26
    let slack = usize::from(connectivity == Connectivity::C26);
    for (i, run) in runs.iter().enumerate() {
        let (s, r) = (run.row / nr, run.row % nr);
        let mut neighbours = [usize::MAX; 4];
        if r > 0 {
            neighbours[0] = run.row - 1;
        }
        if s > 0 {
            match connectivity {
                Connectivity::C26 => {
                    neighbours[1] = run.row - nr;
                    if r > 0 {
                        neighbours[2] = run.row - nr - 1;
                    }
                    if r + 1 < nr {
                        neighbours[3] = run.row - nr + 1;
                    }
                }
                Connectivity::C6 => neighbours[1] = run.row - nr,
                Connectivity::C4InSlice => {}
            }
        }
        for &row in neighbours.iter().filter(|&&n| n != usize::MAX) {
            let first = row_start[row];
            for (j, other) in runs[first..row_start[row + 1]].iter().enumerate() {
                let j = first + j;
                if other.c0 > run.c1 + slack {
                    break;
                }
                if other.c1 + slack >= run.c0 {
                    let (a, b) = (find(&mut parent, i as u32), find(&mut parent, j as u32));
                    if a != b {
                        parent[a.max(b) as usize] = a.min(b);
                    }
                }
            }
        }
    }
    (0..runs.len() as u32)
        .map(|i| find(&mut parent, i))
        .collect()
}

/// Labels the 26-connected components.
pub fn connected_components(mask: &[bool], shape: [usize; 3]) -> Components {
    check(mask, shape);
    let (runs, row_start) = runs_of(mask, shape, true);
    let roots = join_runs(&runs, &row_start, shape, Connectivity::C26);
    // number components in scan order: roots are the smallest run index of their component
    let mut label_of_root = vec![0u32; runs.len()];
    let mut sizes = Vec::new();
    let mut run_label = Vec::with_capacity(runs.len());
    for (run, &root) in runs.iter().zip(&roots) {
        if label_of_root[root as usize] == 0 {
            sizes.push(0);
            label_of_root[root as usize] = sizes.len() as u32;
        }
        let l = label_of_root[root as usize];
        sizes[l as usize - 1] += (run.c1 - run.c0 + 1) as u64;
        run_label.push(l);
    }
    Components {
        shape,
        runs,
        run_label,
        sizes,
    }
}

/// Number of 26-connected components.
pub fn count_components(mask: &[bool], shape: [usize; 3]) -> u32 {
    connected_components(mask, shape).count() as u32
}

/// Only the largest 26-connected component (an empty mask stays empty).
pub fn keep_largest_component(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let cc = connected_components(mask, shape);
    match cc.largest() {
        Some(k) => cc.select(|l, _| l == k),
        None => mask.to_vec(),
    }
}

/// The mask without its 26-connected components of fewer than `min_voxels` voxels.
pub fn remove_small_components(mask: &[bool], shape: [usize; 3], min_voxels: u64) -> Vec<bool> {
    if min_voxels <= 1 {
        return mask.to_vec();
    }
    connected_components(mask, shape).select(|_, size| size >= min_voxels)
}

/// Fills the holes of a mask in 3-D: background voxels that no 6-connected background path
/// joins to the border of the volume become foreground.
pub fn fill_holes(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    fill_background_not_reaching_border(mask, shape, Connectivity::C6)
}

/// Fills the holes of each slice on its own: background pixels that no 4-connected path within
/// the slice joins to the slice's edge become foreground.
pub fn fill_holes_per_slice(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    fill_background_not_reaching_border(mask, shape, Connectivity::C4InSlice)
}

fn fill_background_not_reaching_border(
    mask: &[bool],
    shape: [usize; 3],
    connectivity: Connectivity,
) -> Vec<bool> {
    check(mask, shape);
    let [ns, nr, nc] = shape;
    let (runs, row_start) = runs_of(mask, shape, false);
    let roots = join_runs(&runs, &row_start, shape, connectivity);
    let mut outside = vec![false; runs.len()];
    for (run, &root) in runs.iter().zip(&roots) {
        let (s, r) = (run.row / nr, run.row % nr);
        let end_slice = connectivity != Connectivity::C4InSlice && (s == 0 || s + 1 == ns);
        if end_slice || r == 0 || r + 1 == nr || run.c0 == 0 || run.c1 + 1 == nc {
            outside[root as usize] = true;
        }
    }
    let mut out = mask.to_vec();
    for (run, &root) in runs.iter().zip(&roots) {
        if !outside[root as usize] {
            out[run.row * nc + run.c0..=run.row * nc + run.c1].fill(true);
        }
    }
    out
}

/// Applies a label's post-processing from the manifest: fill holes, remove small components,
/// keep the largest.
pub fn apply(spec: &PostprocessSpec, mask: Vec<bool>, shape: [usize; 3]) -> Vec<bool> {
    let mut mask = mask;
    if spec.fill_holes {
        mask = fill_holes(&mask, shape);
    }
    if spec.fill_holes_per_slice {
        mask = fill_holes_per_slice(&mask, shape);
    }
    if spec.min_component_voxels > 1 {
        mask = remove_small_components(&mask, shape, spec.min_component_voxels);
    }
    if spec.keep_largest_component {
        mask = keep_largest_component(&mask, shape);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(shape: [usize; 3], on: &[[usize; 3]]) -> Vec<bool> {
        let mut m = vec![false; shape.iter().product()];
        for &[s, r, c] in on {
            m[(s * shape[1] + r) * shape[2] + c] = true;
        }
        m
    }

    #[test]
    fn diagonal_neighbours_are_connected() {
        let shape = [3, 3, 5];
        // corner to corner through the centre: one component under 26-connectivity
        let m = grid(shape, &[[0, 0, 0], [1, 1, 1], [2, 2, 2], [0, 0, 4]]);
        let cc = connected_components(&m, shape);
        assert_eq!(cc.count(), 2);
        assert_eq!(cc.sizes, vec![3, 1]);
        assert_eq!(cc.labels()[(2 * 3 + 2) * 5 + 2], 1);
        assert_eq!(cc.labels()[4], 2);
        let largest = keep_largest_component(&m, shape);
        assert_eq!(largest.iter().filter(|&&v| v).count(), 3);
        assert!(!largest[4]);
        let kept = remove_small_components(&m, shape, 2);
        assert_eq!(kept, largest);
    }

    /// Flood fill with explicit neighbour offsets, the plain way, as a reference.
    fn flood_count(mask: &[bool], shape: [usize; 3], offsets: &[[isize; 3]]) -> (usize, Vec<u32>) {
        let [ns, nr, nc] = shape;
        let mut labels = vec![0u32; mask.len()];
        let mut n = 0;
        for start in 0..mask.len() {
            if !mask[start] || labels[start] != 0 {
                continue;
            }
            n += 1;
            labels[start] = n as u32;
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                let p = [i / (nr * nc), i / nc % nr, i % nc];
                for o in offsets {
                    let q = [0, 1, 2].map(|k| p[k] as isize + o[k]);
                    if q.iter()
                        .zip([ns, nr, nc])
                        .any(|(&v, n)| v < 0 || v >= n as isize)
                    {
                        continue;
                    }
                    let j = (q[0] as usize * nr + q[1] as usize) * nc + q[2] as usize;
                    if mask[j] && labels[j] == 0 {
                        labels[j] = n as u32;
                        stack.push(j);
                    }
                }
            }
        }
        (n, labels)
    }

    fn random_mask(shape: [usize; 3], percent: u64, seed: &mut u64) -> Vec<bool> {
        (0..shape.iter().product::<usize>())
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 33) % 100 < percent
            })
            .collect()
    }

    #[test]
    fn runs_agree_with_a_plain_flood_fill() {
        let shape = [6, 7, 9];
        let all26: Vec<[isize; 3]> = (0..27)
            .map(|k| [k / 9 - 1, k / 3 % 3 - 1, k % 3 - 1])
            .filter(|o| *o != [0, 0, 0])
            .collect();
        let six = [
            [1, 0, 0],
            [-1, 0, 0],
            [0, 1, 0],
            [0, -1, 0],
            [0, 0, 1],
            [0, 0, -1],
        ];
        let mut seed = 7;
        for percent in [10, 25, 40, 55, 70] {
            let mask = random_mask(shape, percent, &mut seed);
            let cc = connected_components(&mask, shape);
            let (n, labels) = flood_count(&mask, shape, &all26);
            assert_eq!(cc.count(), n);
            assert_eq!(cc.labels(), labels, "scan-order numbering");
            // fill holes: the background components that reach no border
            let background: Vec<bool> = mask.iter().map(|&m| !m).collect();
            let (_, bg) = flood_count(&background, shape, &six);
            let mut touches = vec![false; bg.len() + 1];
            for (i, &l) in bg.iter().enumerate() {
                let p = [i / 63, i / 9 % 7, i % 9];
                if l != 0 && p.iter().zip(shape).any(|(&v, n)| v == 0 || v + 1 == n) {
                    touches[l as usize] = true;
                }
            }
            let expected: Vec<bool> = bg.iter().map(|&l| l == 0 || !touches[l as usize]).collect();
            assert_eq!(fill_holes(&mask, shape), expected);
        }
    }

    #[test]
    fn hollow_cube_is_filled_but_an_open_one_is_not() {
        let shape = [5, 5, 5];
        let mut on = Vec::new();
        for s in 1..4 {
            for r in 1..4 {
                for c in 1..4 {
                    if [s, r, c] != [2, 2, 2] {
                        on.push([s, r, c]);
                    }
                }
            }
        }
        let closed = grid(shape, &on);
        let filled = fill_holes(&closed, shape);
        assert!(filled[(2 * 5 + 2) * 5 + 2]);
        assert_eq!(filled.iter().filter(|&&v| v).count(), 27);
        // open the shell at the top: the cavity reaches the border, nothing to fill in 3-D...
        on.retain(|&p| p != [1, 2, 2]);
        let open = grid(shape, &on);
        assert_eq!(fill_holes(&open, shape), open);
        // ...but within slices 1 and 2 each gap is enclosed by a ring
        let per_slice = fill_holes_per_slice(&open, shape);
        assert!(per_slice[(2 * 5 + 2) * 5 + 2]);
        assert_eq!(per_slice.iter().filter(|&&v| v).count(), 27);
    }
}
