//! Structural validation of NFSv3 arguments before they are decoded.
//!
//! The `nfs3_types` codec allocates a variable-length field's declared size before reading it,
//! so a 40-byte call declaring a 4 GiB name would make us reserve 4 GiB. Walking the
//! argument layout here first (RFC 1813 section 3.3), with each length bounded by what the
//! protocol allows and by the bytes actually present, means the codec only ever sees lengths
//! that fit in the record.

use oncrpc::message::XdrReader;

/// NFSv3 handles are at most 64 bytes (`NFS3_FHSIZE`).
const FH_MAX: usize = 64;
/// Names longer than NAME_MAX are answered with NAMETOOLONG, so accept them here.
const NAME_MAX: usize = 4096;
const PATH_MAX: usize = 4096;

#[derive(Clone, Copy)]
enum Item {
    Fh,
    Name,
    Path,
    U32,
    U64,
    Verf,
    Sattr,
    Guard,
    CreateHow,
    MknodData,
}

use Item::*;

fn layout(proc_: u32) -> Option<&'static [Item]> {
    Some(match proc_ {
        1 | 5 | 18 | 19 | 20 => &[Fh],
        2 => &[Fh, Sattr, Guard],
        3 | 12 | 13 => &[Fh, Name],
        4 => &[Fh, U32],
        6 | 21 => &[Fh, U64, U32],
        8 => &[Fh, Name, CreateHow],
        9 => &[Fh, Name, Sattr],
        10 => &[Fh, Name, Sattr, Path],
        11 => &[Fh, Name, MknodData],
        14 => &[Fh, Name, Fh, Name],
        15 => &[Fh, Fh, Name],
        16 => &[Fh, U64, Verf, U32],
        17 => &[Fh, U64, Verf, U32, U32],
        _ => return None,
    })
}

fn optional(r: &mut XdrReader<'_>, words: usize) -> Option<()> {
    match r.u32()? {
        0 => Some(()),
        1 => (0..words).try_for_each(|_| r.u32().map(drop)),
        _ => None,
    }
}

fn sattr(r: &mut XdrReader<'_>) -> Option<()> {
    optional(r, 1)?; // mode
    optional(r, 1)?; // uid
    optional(r, 1)?; // gid
    optional(r, 2)?; // size
    for _ in 0..2 {
        // atime, mtime: DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME(nfstime3)
        match r.u32()? {
            0 | 1 => {}
            2 => {
                r.u32()?;
                r.u32()?;
            }
            _ => return None,
        }
    }
    Some(())
}

fn item(r: &mut XdrReader<'_>, it: Item) -> Option<()> {
    match it {
        Fh => r.opaque(FH_MAX).map(drop),
        Name => r.opaque(NAME_MAX).map(drop),
        Path => r.opaque(PATH_MAX).map(drop),
        U32 => r.u32().map(drop),
        U64 | Verf => r.u32().and_then(|_| r.u32()).map(drop),
        Sattr => sattr(r),
        Guard => optional(r, 2),
        CreateHow => match r.u32()? {
            0 | 1 => sattr(r),
            2 => item(r, Verf),
            _ => None,
        },
        MknodData => match r.u32()? {
            // NF3CHR, NF3BLK: attributes and device numbers
            3 | 4 => sattr(r).and_then(|_| item(r, Verf)),
            // NF3SOCK, NF3FIFO: attributes
            6 | 7 => sattr(r),
            // Other types carry nothing (and are refused with BADTYPE).
            1 | 2 | 5 => Some(()),
            _ => None,
        },
    }
}

/// Whether `args` has the shape of procedure `proc_`'s arguments with every length in bounds.
pub fn well_formed(proc_: u32, args: &[u8]) -> bool {
    let Some(items) = layout(proc_) else {
        return true;
    };
    let mut r = XdrReader::new(args);
    items.iter().all(|&i| item(&mut r, i).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn huge_declared_lengths_are_malformed() {
        assert!(!well_formed(1, &words(&[u32::MAX, 0, 0])));
        let mut lookup = words(&[4, 1]);
        lookup.extend(words(&[u32::MAX]));
        assert!(!well_formed(3, &lookup));
    }

    #[test]
    fn a_plain_lookup_is_well_formed() {
        let mut args = words(&[8, 1, 2]);
        args.extend(words(&[3]));
        args.extend(b"abc\0");
        assert!(well_formed(3, &args));
        assert!(!well_formed(3, &args[..args.len() - 4]));
    }

    #[test]
    fn create_modes_and_mknod_types_are_checked() {
        let fh_name = words(&[4, 7, 1, 0x6100_0000]);
        let mut exclusive = fh_name.clone();
        exclusive.extend(words(&[2, 1, 2]));
        assert!(well_formed(8, &exclusive));
        let mut bad = fh_name.clone();
        bad.extend(words(&[9]));
        assert!(!well_formed(8, &bad));
        let mut fifo = fh_name;
        fifo.extend(words(&[7, 1, 0o644, 0, 0, 0, 0, 0]));
        assert!(well_formed(11, &fifo));
    }
}
