//! The RFC 9162 Merkle tree: roots, inclusion and consistency proofs.
//!
//! Trees are read through [`NodeSource`], which returns the hash of a
//! *complete* subtree (`level` = height, `index` = position among subtrees of
//! that height). Any `MTH(D[a:b])` is composed from such nodes exactly as
//! RFC 9162 §2.1.1 splits at the largest power of two, so a store only needs
//! complete nodes (tiles) and never the leaves' data.
//!
//! Proof generation follows the recursive definitions of RFC 9162 §2.1.3.1
//! (`PATH`) and §2.1.4.1 (`SUBPROOF`); verification follows the iterative
//! algorithms of §2.1.3.2 and §2.1.4.2.

use super::hash::{Hash, empty_root, node_hash};

/// A reader of complete subtree hashes.
pub trait NodeSource {
    /// The error of the backing storage.
    type Error;
    /// Returns the hash of the complete subtree of height `level` at `index`,
    /// covering leaves `index << level .. (index + 1) << level`.
    ///
    /// # Errors
    /// Storage errors, or a node that is not (yet) complete.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

fn largest_pow2_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Returns `MTH(D[start:end])`.
///
/// # Errors
/// Propagates the node source's errors.
pub fn subtree<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    debug_assert!(n > 0);
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return src.node(level, start >> level);
    }
    let k = largest_pow2_below(n);
    let left = subtree(src, start, start + k)?;
    let right = subtree(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// Returns the root of the tree of the first `size` leaves.
///
/// # Errors
/// Propagates the node source's errors.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(src, 0, size)
}

/// Returns the inclusion proof of leaf `index` in the tree of `size` leaves
/// (RFC 9162 `PATH(m, D[n])`), ordered from the leaf upwards.
///
/// # Errors
/// Propagates the node source's errors.
///
/// # Panics
/// When `index >= size`; callers validate first.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(
        index < size,
        "leaf index {index} outside tree of size {size}"
    );
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n == 1 {
        return Ok(());
    }
    let k = largest_pow2_below(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(subtree(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(subtree(src, start, start + k)?);
    }
    Ok(())
}

/// Returns the consistency proof between the trees of `old` and `new` leaves
/// (RFC 9162 `PROOF(m, D[n])`).
///
/// # Errors
/// Propagates the node source's errors.
///
/// # Panics
/// When `old > new`; callers validate first.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(old <= new, "old size {old} above new size {new}");
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(src, old, 0, new, true, &mut out)?;
    Ok(out)
}

fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree(src, start, end)?);
        }
        return Ok(());
    }
    let k = largest_pow2_below(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out)?;
        out.push(subtree(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(subtree(src, start, start + k)?);
    }
    Ok(())
}

/// Returns whether `proof` shows that `leaf` is leaf `index` of the tree of
/// `size` leaves with `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnum, mut snum) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node_hash(p, &r);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    snum == 0 && r == *root
}

/// Returns whether `proof` shows that the tree of `old` leaves with
/// `old_root` is a prefix of the tree of `new` leaves with `new_root`
/// (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fnum, mut snum) = (old - 1, new - 1);
    while fnum & 1 == 1 {
        fnum >>= 1;
        snum >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    fr == *old_root && sr == *new_root && snum == 0
}

/// An in-memory tree over leaf hashes: every complete node kept per level.
///
/// Used by tests, by `verify` to recompute roots from events, and as the
/// reference the tile-backed source is checked against.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// Returns an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash, completing parent nodes as they fill.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut h = leaf;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let len = self.levels[level].len();
            if len % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
    }

    /// Returns the number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Returns the root of the whole tree.
    pub fn root(&self) -> Hash {
        match root(self, self.size()) {
            Ok(h) => h,
            Err(never) => match never {},
        }
    }
}

impl NodeSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        Ok(self.levels[level as usize][index as usize])
    }
}

/// A streaming root computation keeping only the right edge (the complete
/// subtrees of the binary decomposition of the size): O(log n) memory.
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    /// (height, hash) of complete subtrees, left to right, heights decreasing.
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    /// Returns an empty frontier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut cur = (0u32, leaf);
        while let Some(&(h, left)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, node_hash(&left, &cur.1));
        }
        self.stack.push(cur);
        self.size += 1;
    }

    /// Returns the number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the current root.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::hash::leaf_hash;
    use proptest::prelude::*;

    fn tree_of(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    /// The naive recursive definition of RFC 9162 §2.1.1 over leaf hashes.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = largest_pow2_below(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn largest_pow2_below_is_strictly_below() {
        assert_eq!(largest_pow2_below(2), 1);
        assert_eq!(largest_pow2_below(3), 2);
        assert_eq!(largest_pow2_below(8), 4);
        assert_eq!(largest_pow2_below(9), 8);
    }

    proptest! {
        #[test]
        fn roots_agree_with_the_definition(n in 0u64..300) {
            let t = tree_of(n);
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let mut f = Frontier::new();
            for l in &leaves { f.push(*l); }
            prop_assert_eq!(t.root(), reference_root(&leaves));
            prop_assert_eq!(f.root(), reference_root(&leaves));
        }

        #[test]
        fn every_inclusion_proof_verifies((size, index) in (1u64..200).prop_flat_map(|s| (Just(s), 0..s))) {
            let t = tree_of(size);
            let proof = inclusion_proof(&t, index, size).unwrap_or_else(|e| match e {});
            let root = root(&t, size).unwrap_or_else(|e| match e {});
            let leaf = leaf_hash(&index.to_be_bytes());
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root));
            // The same proof must not verify another leaf or another root.
            let other = leaf_hash(b"other");
            prop_assert!(!verify_inclusion(&other, index, size, &proof, &root));
            prop_assert!(!verify_inclusion(&leaf, index, size, &proof, &empty_root()));
        }

        #[test]
        fn every_consistency_proof_verifies((new, old) in (1u64..200).prop_flat_map(|n| (Just(n), 1..=n))) {
            let t = tree_of(new);
            let proof = consistency_proof(&t, old, new).unwrap_or_else(|e| match e {});
            let r1 = root(&t, old).unwrap_or_else(|e| match e {});
            let r2 = root(&t, new).unwrap_or_else(|e| match e {});
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof));
            if old != new {
                prop_assert!(!verify_consistency(old, new, &r2, &r1, &proof));
            }
        }
    }
}
