//! openraft's own storage conformance suite, run against the store.

use openraft::testing::log::Suite;
use raft_store::testing::TempStoreBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(TempStoreBuilder)
        .await
        .expect("openraft storage suite");
}
