//! The image drive: a container image read through a chunk link.

use super::*;

/// An image drive whose chunk link is served by a thread: chunk 0 and 2 stored
/// (sector `n` of each holds byte `n + 1`, chunk 2 with 1 added), chunk 1 zeros.
/// `tamper` changes what the server sends for chunk 2.
fn image_block(tamper: fn(&mut Vec<u8>) -> bool) -> Block {
    use chunkstore::wire::{frame, parse_header, FrameKind};
    use chunkstore::{convergent, ChunkRef, ImageManifest, Salt, CHUNK_SIZE};
    let salt = Salt::from_bytes([7; 32]);
    let plain = |k: u8| -> Vec<u8> {
        (0..CHUNK_SIZE)
            .map(|i| ((i / 512) as u8).wrapping_add(1 + k))
            .collect()
    };
    let (c0, c2) = (
        convergent::seal(&salt, &plain(0)).unwrap(),
        convergent::seal(&salt, &plain(1)).unwrap(),
    );
    let stored = |c: &convergent::SealedChunk| ChunkRef::Stored {
        id: c.id(),
        key: c.key().clone(),
        len: CHUNK_SIZE as u32,
    };
    let manifest = ImageManifest::new(vec![
        stored(&c0),
        ChunkRef::Zeros {
            len: CHUNK_SIZE as u32,
        },
        stored(&c2),
    ])
    .unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let chunks = [
        (c0.id(), c0.bytes().to_vec()),
        (c2.id(), c2.bytes().to_vec()),
    ];
    let (c2_id, encoded) = (c2.id(), manifest.encode().to_vec());
    std::thread::spawn(move || {
        let mut s = ours;
        s.write_all(&frame(FrameKind::Manifest, &encoded)).unwrap();
        let mut h = [0u8; 5];
        while s.read_exact(&mut h).is_ok() {
            let (_, len) = parse_header(&h).unwrap();
            let mut id = vec![0u8; len];
            s.read_exact(&mut id).unwrap();
            let (cid, bytes) = chunks.iter().find(|(c, _)| c.0[..] == id[..]).unwrap();
            let mut bytes = bytes.clone();
            let reply = if *cid == c2_id && !tamper(&mut bytes) {
                frame(FrameKind::Error, b"\x00not here")
            } else {
                frame(FrameKind::Chunk, &bytes)
            };
            s.write_all(&reply).unwrap();
        }
    });
    Block::from_image_link(theirs).unwrap()
}

fn image_read(tamper: fn(&mut Vec<u8>) -> bool, sector: u64, len: u32) -> Outcome {
    let block = image_block(tamper);
    run_on(
        block,
        Harness::new(),
        Some((VIRTIO_BLK_T_IN, sector)),
        std_chain(len, true),
    )
}

const CHUNK_SECTORS: u64 = (chunkstore::CHUNK_SIZE / 512) as u64;

#[test]
fn an_image_drive_reads_across_chunks_and_zero_runs() {
    let o = image_read(|_| true, CHUNK_SECTORS - 1, 1024);
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(o.block.capacity_sectors(), 3 * CHUNK_SECTORS);
    let mut buf = vec![0u8; 1024];
    o.h.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf[..512]
        .iter()
        .all(|b| *b == 0u8.wrapping_add(CHUNK_SECTORS as u8)));
    assert!(
        buf[512..].iter().all(|b| *b == 0),
        "chunk 1 is a run of zeros"
    );
    // The last chunk, fetched through the link and opened.
    let o = image_read(|_| true, 2 * CHUNK_SECTORS + 4, 512);
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    let b: u8 = o.h.mem.read_obj(GuestAddress(DATA)).unwrap();
    assert_eq!(b, 6);
}

#[test]
fn a_tampered_or_refused_chunk_is_an_io_error_and_no_bytes() {
    let flip: fn(&mut Vec<u8>) -> bool = |b| {
        b[100] ^= 1;
        true
    };
    for tamper in [flip, |_: &mut Vec<u8>| false] {
        let o = image_read(tamper, 2 * CHUNK_SECTORS, 1024);
        assert_eq!(o.status, VIRTIO_BLK_S_IOERR);
        assert_eq!(o.used_len, 1);
        assert_eq!(get(&m(&o).io_errors), 1);
        let b: u8 = o.h.mem.read_obj(GuestAddress(DATA)).unwrap();
        assert_eq!(b, 0xab, "guest memory untouched");
    }
}

#[test]
fn an_image_drive_refuses_writes() {
    let block = image_block(|_| true);
    let o = run_on(
        block,
        Harness::new(),
        Some((VIRTIO_BLK_T_OUT, 0)),
        std_chain(512, false),
    );
    assert_eq!(o.status, VIRTIO_BLK_S_IOERR);
    assert_eq!(get(&m(&o).read_only_violations), 1);
    assert_ne!(o.block.avail_features() & VIRTIO_BLK_F_RO, 0);
}
