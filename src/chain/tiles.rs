//! Persisting the Merkle tree as tiles (C2SP tlog-tiles geometry).
//!
//! A tile at tile-level `L`, index `t` holds up to 256 consecutive hashes of
//! tree nodes of height `8·L` (level 0: leaf hashes). A tile grows until it
//! is full; stores keep one row per tile and overwrite it as it grows. Any
//! complete node of height `h` is recomputed from at most 128 hashes of one
//! tile, so roots and proofs never need the events (which the archiver
//! removes from the hot store).
//!
//! Not the tlog-tiles HTTP layout: tiles live in the hot store, keyed by
//! `(stream, level, index)`.

use std::collections::{BTreeMap, HashMap};

use super::hash::{Hash, node_hash};
use super::merkle::NodeSource;

/// Tile height in tree levels.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// The coordinates of a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Tile level; its hashes are nodes of height `8 · level`.
    pub level: u32,
    /// Tile index within its level.
    pub index: u64,
}

/// Returns the tile holding the hashes needed for node (`height`, `index`).
pub fn tile_for_node(height: u32, index: u64) -> TileId {
    let level = height / TILE_HEIGHT;
    let first = index << (height % TILE_HEIGHT);
    TileId {
        level,
        index: first / TILE_WIDTH,
    }
}

/// Returns the right-most (possibly partial) tile of each level for a tree of
/// `size` leaves, with its width, lowest level first. Full tiles are omitted.
pub fn partial_tiles(size: u64) -> Vec<(TileId, usize)> {
    let mut out = Vec::new();
    let mut level = 0;
    loop {
        let count = size.checked_shr(TILE_HEIGHT * level).unwrap_or(0);
        if count == 0 {
            break;
        }
        let width = (count % TILE_WIDTH) as usize;
        if width > 0 {
            out.push((
                TileId {
                    level,
                    index: count / TILE_WIDTH,
                },
                width,
            ));
        }
        level += 1;
    }
    out
}

/// The root of a perfect subtree over `hashes` (length a power of two).
fn perfect_root(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut layer: Vec<Hash> = hashes.to_vec();
    while layer.len() > 1 {
        layer = layer
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    layer[0]
}

/// The write side: keeps the partial tile of every level and turns appended
/// leaf hashes into tile rows to store.
#[derive(Debug, Clone, Default)]
pub struct TileWriter {
    size: u64,
    partial: Vec<Vec<Hash>>,
}

/// A tile's new content, to be stored at `id` (replacing a narrower version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileUpdate {
    /// Where the tile goes.
    pub id: TileId,
    /// Concatenated 32-byte hashes: the whole tile as it is now.
    pub data: Vec<u8>,
    /// Index of the first hash this append added: hashes before it were
    /// stored already, so a store may write only from here on.
    pub first_new: usize,
}

/// A stored tile that does not have the width its tree size implies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tile {level}/{index} holds {found} hashes, tree size implies {expected}")]
pub struct TileShapeError {
    /// Tile level.
    pub level: u32,
    /// Tile index.
    pub index: u64,
    /// Hashes the tree size implies.
    pub expected: usize,
    /// Hashes found.
    pub found: usize,
}

fn split_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect()
}

impl TileWriter {
    /// Returns a writer for an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns a writer for a tree of `size` leaves, given the stored
    /// contents of its [`partial_tiles`].
    ///
    /// # Errors
    /// A tile whose stored width disagrees with `size`.
    pub fn resume(
        size: u64,
        mut load: impl FnMut(TileId) -> Option<Vec<u8>>,
    ) -> Result<Self, TileShapeError> {
        let mut partial = Vec::new();
        let mut level = 0u32;
        loop {
            let count = size.checked_shr(TILE_HEIGHT * level).unwrap_or(0);
            if count == 0 {
                break;
            }
            let width = (count % TILE_WIDTH) as usize;
            let id = TileId {
                level,
                index: count / TILE_WIDTH,
            };
            let hashes = if width == 0 {
                Vec::new()
            } else {
                let data = load(id).unwrap_or_default();
                if data.len() != width * 32 {
                    return Err(TileShapeError {
                        level,
                        index: id.index,
                        expected: width,
                        found: data.len() / 32,
                    });
                }
                split_hashes(&data)
            };
            partial.push(hashes);
            level += 1;
        }
        Ok(Self { size, partial })
    }

    /// Returns the number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends leaf hashes; returns every tile whose content changed.
    pub fn append(&mut self, leaves: &[Hash]) -> Vec<TileUpdate> {
        let mut changed: BTreeMap<TileId, (Vec<u8>, usize)> = BTreeMap::new();
        for leaf in leaves {
            let mut level = 0usize;
            let mut h = *leaf;
            loop {
                if self.partial.len() <= level {
                    self.partial.push(Vec::new());
                }
                // Index of the tile this hash lands in, before pushing.
                let count_before = self
                    .size
                    .checked_shr(TILE_HEIGHT * level as u32)
                    .unwrap_or(0);
                let id = TileId {
                    level: level as u32,
                    index: count_before / TILE_WIDTH,
                };
                self.partial[level].push(h);
                let tile = &self.partial[level];
                let first_new = changed.get(&id).map_or(tile.len() - 1, |(_, f)| *f);
                changed.insert(id, (tile.iter().flatten().copied().collect(), first_new));
                if tile.len() as u64 == TILE_WIDTH {
                    h = perfect_root(tile);
                    self.partial[level].clear();
                    level += 1;
                    continue;
                }
                break;
            }
            self.size += 1;
        }
        changed
            .into_iter()
            .map(|(id, (data, first_new))| TileUpdate {
                id,
                data,
                first_new,
            })
            .collect()
    }
}

/// Hashes per stored strip of a tile: stores keep a tile as strips of up to
/// 16 hashes (512 bytes) and a commit rewrites only the strips it extends.
pub const STRIP_HASHES: usize = 16;

/// Returns the strips of `t` that its append changed: (strip number, bytes).
pub fn changed_strips(t: &TileUpdate) -> impl Iterator<Item = (i64, &[u8])> {
    let first = t.first_new / STRIP_HASHES;
    t.data
        .chunks(STRIP_HASHES * 32)
        .enumerate()
        .skip(first)
        .map(|(i, c)| (i as i64, c))
}

/// Joins stored strips (in strip order) into a tile; stops at the first
/// strip out of place, so a damaged tile reads as too short (which callers
/// report as corruption). `None` when there are no strips.
pub fn join_strips(strips: impl IntoIterator<Item = (i64, Vec<u8>)>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (expected, (strip, data)) in strips.into_iter().enumerate() {
        let buf = out.get_or_insert_with(Vec::new);
        if strip != expected as i64 || buf.len() != expected * STRIP_HASHES * 32 {
            break;
        }
        buf.extend_from_slice(&data);
    }
    out
}

/// A [`NodeSource`] over tiles already fetched from a store.
#[derive(Debug, Default)]
pub struct TileSource {
    tiles: HashMap<TileId, Vec<u8>>,
}

/// A node that the fetched tiles cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tile {}/{} is missing or too short for node {height}/{index}", tile.level, tile.index)]
pub struct MissingNode {
    /// The node's height.
    pub height: u32,
    /// The node's index.
    pub index: u64,
    /// The tile that should hold it.
    pub tile: TileId,
}

impl TileSource {
    /// Returns a source over the given tiles.
    pub fn new(tiles: HashMap<TileId, Vec<u8>>) -> Self {
        Self { tiles }
    }
}

impl NodeSource for TileSource {
    type Error = MissingNode;
    fn node(&self, height: u32, index: u64) -> Result<Hash, MissingNode> {
        let tile = tile_for_node(height, index);
        let r = height % TILE_HEIGHT;
        let first = ((index << r) % TILE_WIDTH) as usize;
        let n = 1usize << r;
        let missing = MissingNode {
            height,
            index,
            tile,
        };
        let data = self.tiles.get(&tile).ok_or(missing)?;
        let slice = data.get(first * 32..(first + n) * 32).ok_or(missing)?;
        Ok(perfect_root(&split_hashes(slice)))
    }
}

/// Runs `f` against a source that records which tiles it would read, and
/// returns those tiles. Lets an async store fetch exactly the tiles a root or
/// proof needs before computing it synchronously.
pub fn tiles_needed<F>(f: F) -> Vec<TileId>
where
    F: FnOnce(&Recorder) -> Result<(), std::convert::Infallible>,
{
    let rec = Recorder::default();
    let _ = f(&rec);
    rec.take()
}

/// A node source that answers zeros and remembers the tiles asked for.
#[derive(Debug, Default)]
pub struct Recorder {
    seen: std::sync::Mutex<Vec<TileId>>,
}

impl Recorder {
    /// Returns the tiles asked for, sorted and without repeats.
    pub fn take(self) -> Vec<TileId> {
        let mut v = self
            .seen
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.sort();
        v.dedup();
        v
    }
}

impl NodeSource for Recorder {
    type Error = std::convert::Infallible;
    fn node(&self, height: u32, index: u64) -> Result<Hash, Self::Error> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tile_for_node(height, index));
        Ok([0u8; 32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::hash::leaf_hash;
    use crate::chain::merkle::{self, MemoryTree};
    use proptest::prelude::*;

    fn leaves(from: u64, to: u64) -> Vec<Hash> {
        (from..to).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Appends in the given chunk sizes, storing tiles in a map, and returns
    /// the map.
    fn build(chunks: &[u64]) -> (HashMap<TileId, Vec<u8>>, u64) {
        let mut store = HashMap::new();
        let mut size = 0;
        for &c in chunks {
            // Resume from the store every time, as the writer does after a restart.
            let mut w =
                TileWriter::resume(size, |id| store.get(&id).cloned()).expect("tiles consistent");
            for u in w.append(&leaves(size, size + c)) {
                // Stores may write only the new part: check it is enough.
                let old = store.get(&u.id).cloned().unwrap_or_default();
                assert_eq!(
                    old.len(),
                    u.first_new * 32,
                    "first_new marks the end of what was stored"
                );
                store.insert(u.id, u.data);
            }
            size += c;
        }
        (store, size)
    }

    #[test]
    fn partial_tiles_of_sizes() {
        assert!(partial_tiles(0).is_empty());
        assert_eq!(partial_tiles(1), vec![(TileId { level: 0, index: 0 }, 1)]);
        assert_eq!(partial_tiles(256), vec![(TileId { level: 1, index: 0 }, 1)]);
        assert_eq!(
            partial_tiles(257),
            vec![
                (TileId { level: 0, index: 1 }, 1),
                (TileId { level: 1, index: 0 }, 1)
            ]
        );
    }

    #[test]
    fn resume_refuses_a_short_tile() {
        let (mut store, size) = build(&[300]);
        store.insert(TileId { level: 0, index: 1 }, vec![0u8; 32 * 3]);
        let err = TileWriter::resume(size, |id| store.get(&id).cloned()).expect_err("short tile");
        assert_eq!(err.expected, 44);
        assert_eq!(err.found, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn tiles_answer_every_root_and_proof(chunks in proptest::collection::vec(1u64..400, 1..6)) {
            let (store, size) = build(&chunks);
            let mut mem = MemoryTree::new();
            for l in leaves(0, size) { mem.push(l); }
            let src = TileSource::new(store);
            for s in [1, size / 3 + 1, size / 2 + 1, size] {
                let want = merkle::root(&mem, s).unwrap_or_else(|e| match e {});
                prop_assert_eq!(merkle::root(&src, s).expect("root from tiles"), want);
                let idx = s / 2;
                let p = merkle::inclusion_proof(&src, idx, s).expect("proof from tiles");
                prop_assert_eq!(p, merkle::inclusion_proof(&mem, idx, s).unwrap_or_else(|e| match e {}));
            }
            // The recorder names exactly the tiles a computation reads.
            let needed = tiles_needed(|r| merkle::root(r, size).map(|_| ()));
            let subset: HashMap<TileId, Vec<u8>> = needed.iter().map(|id| (*id, src.tiles[id].clone())).collect();
            prop_assert!(merkle::root(&TileSource::new(subset), size).is_ok());
        }
    }
}
