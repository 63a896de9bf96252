//! The blob store on both backends: a folder and an S3-compatible server (moto's, started by
//! `.ci/s3`). The same bytes are stored once; what is not finished or does not match what the
//! provider announced is never visible; reads serve ranges; deletes and listings see only blobs.

use engine::blobs::{BlobError, BlobHash, BlobStore, Checksum, Expected};
use futures_util::TryStreamExt as _;
use hypernet_tests::test_blob_stores;

/// Writes `bytes` in chunks of `chunk` and commits them.
async fn put(
    blobs: &BlobStore,
    bytes: &[u8],
    chunk: usize,
    expected: Expected,
) -> Result<engine::blobs::BlobRef, BlobError> {
    let mut writer = blobs.writer(64 << 20).await?;
    writer.verify(expected.checksum.as_ref());
    for piece in bytes.chunks(chunk) {
        writer.write(piece).await?;
    }
    writer.finish(blobs, expected).await
}

/// A stream of chunks, gathered.
async fn gathered(
    chunks: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, BlobError>>,
) -> Vec<u8> {
    chunks
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("read")
}

async fn listed(blobs: &BlobStore) -> Vec<BlobHash> {
    let mut hashes: Vec<BlobHash> = blobs.list().try_collect().await.expect("list");
    hashes.sort();
    hashes
}

/// Bytes that are not all alike, so a wrong range or a lost chunk shows.
fn photo(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test]
async fn the_same_bytes_are_stored_once_under_their_hash() {
    for test in test_blob_stores("same_bytes") {
        let blobs = &test.blobs;
        let bytes = photo(300_000, 1);
        let first = put(blobs, &bytes, 16 << 10, Expected::default())
            .await
            .unwrap();
        let second = put(
            blobs,
            &bytes,
            7_000,
            Expected {
                content_type: Some("image/jpeg".into()),
                ..Expected::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(first.hash, BlobHash::of(&bytes), "{}", test.backend);
        assert_eq!(second.hash, first.hash, "{}", test.backend);
        assert_eq!(second.size, 300_000);
        assert_eq!(second.content_type.as_deref(), Some("image/jpeg"));
        let other = put(blobs, &photo(10, 2), 3, Expected::default())
            .await
            .unwrap();
        let mut want = vec![first.hash, other.hash];
        want.sort();
        assert_eq!(listed(blobs).await, want, "{}", test.backend);
        assert_eq!(&blobs.read_all(&first.hash).await.unwrap()[..], &bytes[..]);
        assert_eq!(blobs.size(&first.hash).await.unwrap(), 300_000);
    }
}

#[tokio::test]
async fn a_blob_larger_than_a_part_is_uploaded_in_parts_and_reads_back_whole_and_in_ranges() {
    for test in test_blob_stores("large_blob") {
        let blobs = &test.blobs;
        // Past the 8 MiB part: object storage takes it in three parts.
        let bytes = photo(20 << 20, 3);
        let stored = put(blobs, &bytes, 1 << 20, Expected::default())
            .await
            .unwrap();
        assert_eq!(stored.size, 20 << 20);
        let whole = gathered(blobs.read(&stored.hash, None).await.unwrap()).await;
        assert!(
            whole == bytes,
            "{}: the blob read back differs",
            test.backend
        );
        let range = (9 << 20) - 5..(9 << 20) + 11;
        let within = range.start as u64..range.end as u64;
        let part = gathered(blobs.read(&stored.hash, Some(within)).await.unwrap()).await;
        assert_eq!(part, &bytes[range], "{}", test.backend);
    }
}

#[tokio::test]
async fn what_is_not_finished_or_does_not_match_is_never_stored() {
    for test in test_blob_stores("never_stored") {
        let blobs = &test.blobs;
        let bytes = photo(100_000, 4);
        // A download cut off: the writer is dropped.
        {
            let mut writer = blobs.writer(1 << 20).await.unwrap();
            writer.write(&bytes[..50_000]).await.unwrap();
        }
        // Past the stream's cap: refused at the chunk that crosses it.
        let mut writer = blobs.writer(60_000).await.unwrap();
        writer.write(&bytes[..40_000]).await.unwrap();
        let error = writer.write(&bytes[40_000..80_000]).await.unwrap_err();
        assert!(
            matches!(error, BlobError::TooLarge { limit: 60_000 }),
            "{error}"
        );
        drop(writer);
        // Fewer bytes than the provider announced.
        let error = put(
            blobs,
            &bytes,
            10_000,
            Expected {
                size: Some(100_001),
                ..Expected::default()
            },
        )
        .await
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("100000 bytes came where 100001 were announced")
        );
        // Another file's MD5 (Drive's md5Checksum of other bytes).
        let error = put(
            blobs,
            &bytes,
            10_000,
            Expected {
                checksum: Some(Checksum::Md5([0x11; 16])),
                ..Expected::default()
            },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("its MD5 differs"), "{error}");
        assert_eq!(listed(blobs).await, vec![], "{}", test.backend);
        assert!(!blobs.contains(&BlobHash::of(&bytes)).await.unwrap());
        // Nothing staged is left behind either.
        if let engine::blobs::BlobLocation::Folder(root) = &test.location {
            let staged = std::fs::read_dir(root.join(".staging")).unwrap().count();
            assert_eq!(staged, 0, "staged files left behind");
        }
    }
}

#[tokio::test]
async fn a_deleted_blob_is_gone_and_deleting_it_again_is_fine() {
    for test in test_blob_stores("deleted_blob") {
        let blobs = &test.blobs;
        let kept = put(blobs, b"kept", 4, Expected::default()).await.unwrap();
        let gone = put(blobs, b"gone", 4, Expected::default()).await.unwrap();
        blobs.delete(&gone.hash).await.unwrap();
        blobs.delete(&gone.hash).await.unwrap();
        assert_eq!(listed(blobs).await, vec![kept.hash], "{}", test.backend);
        let error = blobs.read_all(&gone.hash).await.unwrap_err();
        assert!(
            matches!(error, BlobError::Missing(hash) if hash == gone.hash),
            "{error}"
        );
        assert!(matches!(
            blobs.read(&gone.hash, None).await,
            Err(BlobError::Missing(_))
        ));
    }
}

#[tokio::test]
async fn dropbox_and_sha256_checksums_accept_the_right_bytes() {
    use sha2::Digest as _;
    for test in test_blob_stores("checksums") {
        let blobs = &test.blobs;
        // Two blocks and a bit: Dropbox hashes each 4 MiB block, then the block hashes.
        let bytes = photo((4 << 20) * 2 + 100, 5);
        let mut overall = sha2::Sha256::new();
        for block in bytes.chunks(4 << 20) {
            overall.update(sha2::Sha256::digest(block));
        }
        let hex: String = overall
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let dropbox = Checksum::from_hex("dropbox", &hex).unwrap();
        let stored = put(
            blobs,
            &bytes,
            300_000,
            Expected {
                size: Some(bytes.len() as u64),
                checksum: Some(dropbox),
                content_type: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(stored.hash, BlobHash::of(&bytes), "{}", test.backend);
    }
}
