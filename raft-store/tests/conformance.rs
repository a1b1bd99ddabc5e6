//! openraft's own storage conformance suite, run against the redb store.

use openraft::testing::Suite;
use raft_store::testing::TempStoreBuilder;

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(TempStoreBuilder).expect("openraft storage suite");
}
