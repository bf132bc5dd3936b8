//! Conversions between export-store values and NFSv3 wire types.

use std::io;

use export_store::store::EBADHANDLE;
use export_store::{Attr, NodeKind, SetAttr, TimeSet};
use nfs3_types::nfs3::{
    Nfs3Option, fattr3, ftype3, nfsstat3, nfstime3, post_op_attr, pre_op_attr, sattr3, set_atime,
    set_mtime, specdata3, wcc_attr, wcc_data,
};

pub fn time(t: (i64, u32)) -> nfstime3 {
    nfstime3 {
        seconds: t.0.clamp(0, i64::from(u32::MAX)) as u32,
        nseconds: t.1,
    }
}

pub fn fattr(a: &Attr) -> fattr3 {
    fattr3 {
        type_: match a.kind {
            NodeKind::Regular => ftype3::NF3REG,
            NodeKind::Directory => ftype3::NF3DIR,
            NodeKind::Block => ftype3::NF3BLK,
            NodeKind::Char => ftype3::NF3CHR,
            NodeKind::Symlink => ftype3::NF3LNK,
            NodeKind::Socket => ftype3::NF3SOCK,
            NodeKind::Fifo => ftype3::NF3FIFO,
        },
        mode: a.mode,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        used: a.used,
        rdev: specdata3 {
            specdata1: a.rdev_major,
            specdata2: a.rdev_minor,
        },
        fsid: a.fsid,
        fileid: a.fileid,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
    }
}

pub fn post_op(a: Option<&Attr>) -> post_op_attr {
    a.map_or(Nfs3Option::None, |a| Nfs3Option::Some(fattr(a)))
}

pub fn pre_op(a: Option<&Attr>) -> pre_op_attr {
    a.map_or(Nfs3Option::None, |a| {
        Nfs3Option::Some(wcc_attr {
            size: a.size,
            mtime: time(a.mtime),
            ctime: time(a.ctime),
        })
    })
}

pub fn wcc(before: Option<&Attr>, after: Option<&Attr>) -> wcc_data {
    wcc_data {
        before: pre_op(before),
        after: post_op(after),
    }
}

pub fn set_attr(s: &sattr3) -> SetAttr {
    let opt = |o: &Nfs3Option<u32>| match o {
        Nfs3Option::Some(v) => Some(*v),
        Nfs3Option::None => None,
    };
    SetAttr {
        mode: opt(&s.mode),
        uid: opt(&s.uid),
        gid: opt(&s.gid),
        size: match s.size {
            Nfs3Option::Some(v) => Some(v),
            Nfs3Option::None => None,
        },
        atime: match s.atime {
            set_atime::DONT_CHANGE => TimeSet::Keep,
            set_atime::SET_TO_SERVER_TIME => TimeSet::ServerNow,
            set_atime::SET_TO_CLIENT_TIME(t) => TimeSet::Client(i64::from(t.seconds), t.nseconds),
        },
        mtime: match s.mtime {
            set_mtime::DONT_CHANGE => TimeSet::Keep,
            set_mtime::SET_TO_SERVER_TIME => TimeSet::ServerNow,
            set_mtime::SET_TO_CLIENT_TIME(t) => TimeSet::Client(i64::from(t.seconds), t.nseconds),
        },
    }
}

/// The NFSv3 status for a file-system error.
pub fn status(e: &io::Error) -> nfsstat3 {
    match e.raw_os_error() {
        Some(libc::EPERM) => nfsstat3::NFS3ERR_PERM,
        Some(libc::ENOENT) => nfsstat3::NFS3ERR_NOENT,
        Some(libc::ENXIO) => nfsstat3::NFS3ERR_NXIO,
        Some(libc::EACCES) => nfsstat3::NFS3ERR_ACCES,
        Some(libc::EEXIST) => nfsstat3::NFS3ERR_EXIST,
        Some(libc::EXDEV) => nfsstat3::NFS3ERR_XDEV,
        Some(libc::ENODEV) => nfsstat3::NFS3ERR_NODEV,
        Some(libc::ENOTDIR) => nfsstat3::NFS3ERR_NOTDIR,
        Some(libc::EISDIR) => nfsstat3::NFS3ERR_ISDIR,
        Some(libc::EINVAL) => nfsstat3::NFS3ERR_INVAL,
        Some(libc::EFBIG) => nfsstat3::NFS3ERR_FBIG,
        Some(libc::ENOSPC) => nfsstat3::NFS3ERR_NOSPC,
        Some(libc::EROFS) => nfsstat3::NFS3ERR_ROFS,
        Some(libc::EMLINK) => nfsstat3::NFS3ERR_MLINK,
        Some(libc::ENAMETOOLONG) => nfsstat3::NFS3ERR_NAMETOOLONG,
        Some(libc::ENOTEMPTY) => nfsstat3::NFS3ERR_NOTEMPTY,
        Some(libc::EDQUOT) => nfsstat3::NFS3ERR_DQUOT,
        Some(libc::ESTALE) => nfsstat3::NFS3ERR_STALE,
        Some(EBADHANDLE) => nfsstat3::NFS3ERR_BADHANDLE,
        Some(libc::EOPNOTSUPP) => nfsstat3::NFS3ERR_NOTSUPP,
        Some(libc::ELOOP) => nfsstat3::NFS3ERR_INVAL,
        Some(libc::EAGAIN) => nfsstat3::NFS3ERR_JUKEBOX,
        _ => nfsstat3::NFS3ERR_IO,
    }
}
