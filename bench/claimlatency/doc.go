// Package claimlatency measures how long a request waits between its
// submission and its claim: with S3 event notifications on SQS (the LIST
// slowed to a 60s backstop) against LIST polling alone (every 5s, the
// default, and every 1s). It starts versitygw and goaws, runs one
// in-process worker (watcher and executor, files engine on a tiny
// directory), submits requests one at a time at random moments, and
// prints a table of median, p90 and max latency per mode:
//
//	go test -run '^$' -bench ClaimLatency -benchtime 1x ./bench/claimlatency
//
// -args -requests N and -poll-requests N change how many requests each
// mode measures (100 with SQS, 30 per polling mode by default). See
// bench/README.md for a recent result.
package claimlatency
