//! Runs the storage conformance suite against SQLite and against the real PostgreSQL.

use keygate_store::testdb::TestDb;

keygate_store::conformance_suite!(sqlite, TestDb::sqlite());
keygate_store::conformance_suite!(postgres, TestDb::postgres());
