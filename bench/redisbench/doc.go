// Command redisbench measures capsule's Redis backup and restore in keys/s
// next to redis-cli --rdb on the same data:
//
//	go run ./bench/redisbench [-keys 1000000] [-value 32] [-rdb=false] [-scan=false] [-runs N] [-diskless-load on-empty-db|swapdb] [-cpuprofile FILE]
//
// It starts two redis-servers of its own on free ports (no persistence,
// repl-diskless-sync-delay 0), loads -keys small string keys into the
// first with redis-cli --pipe (every tenth with a one-day TTL), starts a
// versitygw and builds ./cmd/capsule (or takes -capsule). Then it times
// redis-cli --rdb FILE, a third redis-server loading that file at
// start-up (until INFO persistence says loading:0), and capsule backup
// and restore in logical mode (the keyspace read over replication; and a
// logical backup with logicalRead: scan, the SCAN+DUMP read, unless
// -scan=false) and in RDB mode (unless -rdb=false), each run by a real `capsule worker
// --once` process whose own peak RSS (VmHWM) it samples. Restores go into
// the second server, emptied first, and must leave it with every key
// and a master: each backup is restored twice, back to back, by a full
// sync from the worker (restoreLoad: auto, "capsule restore (MODE)") and
// by the replay of commands (restoreLoad: replay, "…, replay").
// It ends with issue 20's Redis targets, each against its anchor in the
// same run. -cpuprofile FILE instead backs up and restores once per mode
// in this process under the CPU profiler.
package main
