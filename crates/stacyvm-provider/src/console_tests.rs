use super::*;

#[tokio::test]
async fn tail_reads_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.log");
    std::fs::write(&f, "a\r\nb\nc\n").unwrap();
    assert_eq!(tail_lines(&f, 2).await.unwrap(), ["b", "c"]);
    assert_eq!(tail_lines(&f, 10).await.unwrap(), ["a", "b", "c"]);
    assert!(logs(&dir.path().join("none"), 5).await.unwrap().is_empty());
}
