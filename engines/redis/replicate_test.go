package redis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// targetState is what a full sync must put back: the role, masterauth
// and masteruser.
func targetState(ctx context.Context, t testing.TB, srv *testServer) string {
	t.Helper()
	adm := srv.admin()
	defer adm.Close()
	conn := newDBConn(adm)
	defer conn.Close()
	repl, err := infoFields(ctx, conn, "replication")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := configGet(ctx, conn, "masterauth")
	if err != nil {
		t.Fatal(err)
	}
	user, _ := configGet(ctx, conn, "masteruser")
	return fmt.Sprintf("role:%s masterauth:%q masteruser:%q", repl["role"], auth, user)
}

// checkTarget fails t unless dst holds data and is in state (a master,
// masterauth and masteruser as they were): what, the data's failure, and
// after, the moment the state is judged, name them in the messages.
func checkTarget(ctx context.Context, t testing.TB, dst *testServer, data snapshot, state, what, after string) {
	t.Helper()
	if diff := enginetest.DeepCompare(data, takeSnapshot(ctx, t, dst)); diff != "" {
		t.Fatalf("%s: %s", what, diff)
	}
	if got := targetState(ctx, t, dst); got != state {
		t.Errorf("target after %s: %s, want %s", after, got, state)
	}
}

// oldData gives a target data of its own, different from the seed, in a
// database the backup holds, and a masterauth and masteruser to keep.
func oldData(ctx context.Context, t testing.TB, srv *testServer) {
	t.Helper()
	c := rawClient(srv, 3)
	defer c.Close()
	for i := range 100 {
		if err := c.Set(ctx, fmt.Sprint("old:", i), "old value", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	adm := srv.admin()
	defer adm.Close()
	if err := adm.Do(ctx, "CONFIG", "SET", "masterauth", "the-old-masterauth").Err(); err != nil {
		t.Fatal(err)
	}
	if err := adm.Do(ctx, "CONFIG", "SET", "masteruser", "old-user").Err(); err != nil {
		t.Fatal(err)
	}
}

// TestReplicateRoundTrip restores logical and RDB backups of every type,
// expiries, several databases and functions by a full sync into a
// server with data of its own: the target ends equal to the source, a
// master, with its masterauth and masteruser back.
func TestReplicateRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	for _, mode := range []string{ModeLogical, ModeRDB} {
		t.Run(mode, func(t *testing.T) {
			dst := startServer(t)
			oldData(ctx, t, dst)
			before := targetState(ctx, t, dst)
			store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": mode}))
			target := dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"})
			rinfo, err := New().Restore(ctx, store.RestoreJob(t, "repl", target, info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}}))
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if rinfo.Details["load"] != "replicate" {
				t.Errorf("details %v: want load replicate", rinfo.Details)
			}
			if rinfo.Downtime <= 0 {
				t.Errorf("downtime %v", rinfo.Downtime)
			}
			checkTarget(ctx, t, dst, want, before, "restored data differs", "the restore")
		})
	}
}

// TestReplicateCutTransfer cuts the transfer in the middle (the worker
// failing as it writes), and damages the artifact between the checking
// pass and the transfer: the restore fails, and the target keeps its old
// data and is a master again with its masterauth back.
func TestReplicateCutTransfer(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	c := rawClient(src, 0)
	for i := range 3000 { // a transfer of several buffers
		c.Set(ctx, fmt.Sprint("filler:", i), strings.Repeat("x", 200), 0)
	}
	c.Close()
	for _, mode := range []string{ModeLogical, ModeRDB} {
		store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": mode}))
		for _, cut := range []string{"worker fails", "artifact damaged", "worker fails, swapdb"} {
			t.Run(mode+"/"+cut, func(t *testing.T) {
				var dst *testServer
				if strings.HasSuffix(cut, "swapdb") {
					dst = startServer(t, "repl-diskless-load swapdb")
				} else {
					dst = startServer(t)
				}
				oldData(ctx, t, dst)
				before, beforeState := takeSnapshot(ctx, t, dst), targetState(ctx, t, dst)
				job := store.RestoreJob(t, "cut", dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"}), info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}})
				cutAt := int64(-1)
				switch cut {
				case "worker fails", "worker fails, swapdb":
					testHooks.transfer = func(w io.Writer) io.Writer { return &failingWriter{w: w, left: 20 << 10, at: &cutAt} }
				default:
					corrupt := store.Clone()
					job.Artifacts = corrupt
					testHooks.beforeTransfer = func() { corrupt.Flip(t, corrupt.Names()[0]) }
				}
				defer func() { testHooks.transfer, testHooks.beforeTransfer = nil, nil }()
				_, err := New().Restore(ctx, job)
				if err == nil || !strings.Contains(err.Error(), "keeps its old data") || !strings.Contains(err.Error(), "master again") {
					t.Fatalf("restore with the transfer cut: err = %v, want it to say the target keeps its old data and is a master again", err)
				}
				var ce *engines.ChecksumError
				if cut == "artifact damaged" && !errors.As(err, &ce) {
					t.Errorf("err = %v, want a *engines.ChecksumError", err)
				}
				if cut != "artifact damaged" && cutAt != 0 {
					t.Errorf("the transfer was not cut (left %d)", cutAt)
				}
				t.Logf("the error: %v", err)
				checkTarget(ctx, t, dst, before, beforeState, "a cut transfer changed the target", "the cut")
			})
		}
	}
}

// failingWriter fails after left bytes.
type failingWriter struct {
	w    io.Writer
	left int64
	at   *int64
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > f.left {
		*f.at = 0
		return 0, errors.New("the worker fails mid-stream")
	}
	f.left -= int64(len(p))
	return f.w.Write(p)
}

// TestReplicateStranger has strangers connect to the worker's
// replication port before the target: without the token they are
// refused (a huge forged array among them), and the restore works.
func TestReplicateStranger(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	dst := startServer(t)
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, nil))
	var replies []string
	called := false
	testHooks.listening = func(addr string) {
		called = true
		talk := func(send string) string {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return "dial: " + err.Error()
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(send))
			b, _ := io.ReadAll(bufio.NewReader(c)) // until the worker closes
			return string(b)
		}
		// A silent connection held open must not stop the target.
		silent, err := net.Dial("tcp", addr)
		if err == nil {
			t.Cleanup(func() { silent.Close() })
		}
		replies = append(replies,
			talk("*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n*1\r\n$4\r\nSYNC\r\n"),
			talk("*2\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n*1\r\n$4\r\nSYNC\r\n"),
			talk("*999999999\r\n"),
			talk("*2\r\n$4\r\nAUTH\r\n$999999999\r\n"),
		)
	}
	defer func() { testHooks.listening = nil }()
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "stranger", dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"}), info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !called {
		t.Fatalf("no replication port to connect to")
	}
	wantReplies := []string{"-NOAUTH Authentication required.\r\n-WRONGPASS invalid password\r\n", "", "", ""}
	if fmt.Sprintf("%q", replies) != fmt.Sprintf("%q", wantReplies) {
		t.Errorf("strangers got %q, want %q (refused, nothing of the snapshot)", replies, wantReplies)
	}
	if rinfo.Details["load"] != "replicate" {
		t.Errorf("details %v: want load replicate", rinfo.Details)
	}
	if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, dst)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
}

// TestReplicateUnreachable tells the target to connect where nothing
// listens (as a NetworkPolicy would stop it): auto replays after the
// timeout, replicate fails; both leave the target a master with its
// masterauth back.
func TestReplicateUnreachable(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, nil))
	dead := freePort(t)
	testHooks.announce = func(ip string, _ int) (string, int) { return ip, dead }
	old := connectTimeout
	connectTimeout = 1500 * time.Millisecond
	defer func() { testHooks.announce, connectTimeout = nil, old }()
	for _, load := range []string{LoadAuto, LoadReplicate} {
		t.Run(load, func(t *testing.T) {
			dst := startServer(t)
			oldData(ctx, t, dst)
			before, beforeState := takeSnapshot(ctx, t, dst), targetState(ctx, t, dst)
			rinfo, err := New().Restore(ctx, store.RestoreJob(t, "unreach", dst.source("", dst.password, map[string]any{"restoreLoad": load}), info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}}))
			if got := targetState(ctx, t, dst); got != beforeState {
				t.Errorf("target after the restore: %s, want %s", got, beforeState)
			}
			if load == LoadReplicate {
				if err == nil || !strings.Contains(err.Error(), "did not connect") || !strings.Contains(err.Error(), "as it was") {
					t.Fatalf("err = %v, want the target said unable to connect and left as it was", err)
				}
				if diff := enginetest.DeepCompare(before, takeSnapshot(ctx, t, dst)); diff != "" {
					t.Fatalf("the target changed: %s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if rinfo.Details["load"] != "replay" {
				t.Errorf("details %v: want load replay", rinfo.Details)
			}
			if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, dst)); diff != "" {
				t.Fatalf("restored data differs: %s", diff)
			}
		})
	}
}

// TestReplicateConditions: a full sync is used only when it means what
// the restore means. A target database the backup does not hold with
// keys in it, function libraries that functions: replace would keep,
// more keys than the duplicate check takes, a target that is itself a
// replica: auto replays (database 9 and the
// libraries stay), replicate refuses before it changes anything.
func TestReplicateConditions(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	for _, mode := range []string{ModeLogical, ModeRDB} {
		store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": mode, "databases": seedDBs}))
		for _, cond := range []string{"database 9", "functions", "keys", "replica", "no REPLICAOF"} {
			t.Run(mode+"/"+cond, func(t *testing.T) {
				dst := startServer(t)
				adm := dst.admin()
				defer adm.Close()
				opts := engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}}
				var why string
				switch cond {
				case "database 9":
					c := rawClient(dst, 9)
					c.Set(ctx, "stay", "here", 0)
					c.Close()
					why = "database 9"
				case "functions":
					if err := adm.FunctionLoad(ctx, strings.NewReplacer("capsulelib", "otherlib", "capsule_hello", "other_hello").Replace(functionLib)).Err(); err != nil {
						t.Fatal(err)
					}
					opts.Extra[OptFunctions] = "replace"
					why = "functions: replace"
				case "keys":
					old := maxFullSyncKeys
					maxFullSyncKeys = 50
					defer func() { maxFullSyncKeys = old }()
					why = "checking more than 50"
				case "no REPLICAOF":
					adm.Do(ctx, "ACL", "SETUSER", "default", "-replicaof")
					why = "REPLICAOF: NOPERM"
				case "replica":
					other := startServer(t)
					adm.Do(ctx, "CONFIG", "SET", "masterauth", other.password)
					adm.Do(ctx, "REPLICAOF", "127.0.0.1", strconv.Itoa(other.port))
					for i := 0; i < 200 && !strings.Contains(adm.Info(ctx, "replication").Val(), "master_link_status:up"); i++ {
						time.Sleep(50 * time.Millisecond)
					}
					why = "the target is a replica"
				}
				before, beforeState := takeSnapshot(ctx, t, dst), targetState(ctx, t, dst)
				_, err := New().Restore(ctx, store.RestoreJob(t, "cond", dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"}), info, opts))
				if err == nil || !strings.Contains(err.Error(), why) {
					t.Fatalf("restoreLoad replicate: err = %v, want a refusal naming %q", err, why)
				}
				checkTarget(ctx, t, dst, before, beforeState, "a refused full sync changed the target", "the refusal")
				if cond == "replica" {
					return // a replica refuses writes: no replay either
				}
				rinfo, err := New().Restore(ctx, store.RestoreJob(t, "cond", dst.source("", dst.password, nil), info, opts))
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				if rinfo.Details["load"] != "replay" {
					t.Errorf("details %v: want load replay", rinfo.Details)
				}
				got := takeSnapshot(ctx, t, dst)
				if cond == "database 9" && got.Keys["9"] == nil {
					t.Errorf("database 9 of the target was emptied")
				}
				if cond == "functions" && !strings.Contains(got.Functions, "otherlib") {
					t.Errorf("the target's other library was dropped: %s", got.Functions)
				}
			})
		}
	}
}

// TestFakeMasterLengthPrefixed syncs as a replica without capa eof: the
// snapshot comes length-prefixed, exactly as long as announced, and is
// the same RDB as the diskless transfer's.
func TestFakeMasterLengthPrefixed(t *testing.T) {
	ctx := context.Background()
	rdb := []byte("REDIS0010" + strings.Repeat("\xfe\x00", 1000) + "\xff")
	rdb = append(rdb, make([]byte, 8)...)
	for _, eof := range []bool{false, true} {
		m, err := listenMaster("127.0.0.1", "tok")
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", m.addr().String())
		if err != nil {
			t.Fatal(err)
		}
		capa := "psync2"
		if eof {
			capa = "eof"
		}
		fmt.Fprintf(c, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nAUTH\r\n$3\r\ntok\r\n*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$%d\r\n%s\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n", len(capa), capa)
		rc, err := m.waitReplica(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		sizeCalls := 0
		go func() {
			err := m.send(rc, func(w io.Writer) error { _, err := w.Write(rdb); return err },
				func() (int64, error) { sizeCalls++; return int64(len(rdb)), nil })
			if err != nil {
				t.Error(err)
			}
			rc.conn.Close()
		}()
		got, _ := io.ReadAll(c)
		c.Close()
		m.close()
		head := fmt.Sprintf("-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n+FULLRESYNC %s 0\r\n", m.replid)
		wantBody := fmt.Sprintf("$%d\r\n%s", len(rdb), rdb)
		if eof {
			wantBody = fmt.Sprintf("$EOF:%s\r\n%s%s", m.mark, rdb, m.mark)
		}
		if !bytes.Equal(got, []byte(head+wantBody)) {
			t.Errorf("eof %v: got %q…, want %q…", eof, clip(string(got)), clip(head+wantBody))
		}
		if !eof && sizeCalls != 1 {
			t.Errorf("size computed %d times", sizeCalls)
		}
	}
}

// TestReplicateDuplicateKey restores an artifact that lists a key twice
// (a server loading an RDB stops on that) with restoreLoad: replicate:
// the transfer is cut before its end, the restore fails naming the key,
// and the target is alive with its old data.
func TestReplicateDuplicateKey(t *testing.T) {
	ctx := context.Background()
	dst := startServer(t)
	oldData(ctx, t, dst)
	before, beforeState := takeSnapshot(ctx, t, dst), targetState(ctx, t, dst)
	str := func(v string) []byte { return dumpPayload(append([]byte{0, byte(len(v))}, v...), 10) }
	store := enginetest.NewStore()
	w, _ := store.Create(artifactKeys)
	kw, _ := newKeyWriter(w)
	kw.database(3)
	for i := range 5000 {
		kw.key(fmt.Appendf(nil, "k:%d", i), 0, str("v"))
	}
	kw.key([]byte("k:17"), 0, str("again"))
	kw.finish()
	w.Close()
	info := engines.BackupInfo{Format: formatLogical, ServerVersion: "7.0.15", SourceInfo: map[string]string{"mode": "logical", "databases": "3"}}
	_, err := New().Restore(ctx, store.RestoreJob(t, "dup", dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"}), info, engines.RestoreOptions{}))
	if err == nil || !strings.Contains(err.Error(), `"k:17" is listed twice`) {
		t.Fatalf("err = %v, want the duplicate key named", err)
	}
	checkTarget(ctx, t, dst, before, beforeState, "the target changed", "the restore")
}

// TestReplicateForgedRDB restores RDB files that a loading server would
// stop on (a key listed twice; a SELECTDB past the target's databases)
// into a target that loads from the socket as the transfer streams
// (repl-diskless-load swapdb): nothing unchecked reaches it, the
// restore fails naming the problem, and the target is alive with its
// old data.
func TestReplicateForgedRDB(t *testing.T) {
	ctx := context.Background()
	str := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	file := func(body ...[]byte) []byte {
		f := []byte("REDIS0010")
		for _, b := range body {
			f = append(f, b...)
		}
		f = append(f, 0xFF)
		return binary.LittleEndian.AppendUint64(f, crcJones(0, f))
	}
	key := func(k, v string) []byte { return append(append([]byte{0}, str(k)...), str(v)...) }
	for name, tc := range map[string]struct {
		rdb  []byte
		want string
	}{
		"duplicate key": {file([]byte{0xFE, 0, 0xFB, 2, 0}, key("a", "1"), key("b", "2"), key("a", "3")), `"a" is listed twice`},
		"database 20":   {file([]byte{0xFE, 0, 0xFB, 1, 0}, key("a", "1"), []byte{0xFE, 20}), "selects database 20"},
	} {
		t.Run(name, func(t *testing.T) {
			dst := startServer(t, "repl-diskless-load swapdb")
			oldData(ctx, t, dst)
			before, beforeState := takeSnapshot(ctx, t, dst), targetState(ctx, t, dst)
			store := enginetest.NewStore()
			w, _ := store.Create(artifactRDB)
			w.Write(tc.rdb)
			w.Close()
			info := engines.BackupInfo{Format: formatRDB, ServerVersion: "7.0.15", SourceInfo: map[string]string{"mode": "rdb", "databases": "all"}}
			_, err := New().Restore(ctx, store.RestoreJob(t, "forged", dst.source("", dst.password, map[string]any{"restoreLoad": "replicate"}), info, engines.RestoreOptions{}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
			checkTarget(ctx, t, dst, before, beforeState, "the target changed", "the restore")
		})
	}
}

// TestReplicateTargetDropsTransfer has the target drop the transfer
// midway (its repl-timeout passes while the worker stalls): the target
// keeps its data, and auto replays instead.
func TestReplicateTargetDropsTransfer(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	c := rawClient(src, 0)
	for i := range 3000 { // incompressible: a transfer of several buffers
		c.Set(ctx, fmt.Sprint("filler:", i), randHex(200), 0)
	}
	c.Close()
	want := takeSnapshot(ctx, t, src)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, nil))
	dst := startServer(t, "repl-timeout 1")
	oldData(ctx, t, dst)
	beforeState := targetState(ctx, t, dst)
	stalled := false
	testHooks.transfer = func(w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			if !stalled {
				stalled = true
				n, err := w.Write(p[:len(p)/2])
				if f, ok := w.(interface{ Flush() error }); ok && err == nil {
					err = f.Flush()
				}
				time.Sleep(3 * time.Second) // the target gives up after 1 s
				if err != nil {
					return n, err
				}
				m, err := w.Write(p[len(p)/2:])
				return n + m, err
			}
			return w.Write(p)
		})
	}
	defer func() { testHooks.transfer = nil }()
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "drop", dst.source("", dst.password, nil), info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !stalled {
		t.Fatalf("the transfer never stalled")
	}
	if rinfo.Details["load"] != "replay" {
		t.Errorf("details %v: want load replay after the target dropped the transfer", rinfo.Details)
	}
	checkTarget(ctx, t, dst, want, beforeState, "restored data differs", "the restore")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestSnapshotSent checks what a full sync sends, without a target: in
// rdb mode exactly the stored file, byte for byte (its length is what a
// length-prefixed transfer announces); in logical mode an RDB file that
// walks with every key of the backup, its functions and a good CRC-64.
func TestSnapshotSent(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	for _, mode := range []string{ModeLogical, ModeRDB} {
		store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": mode}))
		job := store.RestoreJob(t, "sent", src.source("", src.password, nil), info, engines.RestoreOptions{})
		artifact := artifactKeys
		if mode == ModeRDB {
			artifact = artifactRDB
		}
		sum, err := readArtifact(ctx, job, artifact, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		var sent bytes.Buffer
		if mode == ModeRDB {
			keys, _, err := teeRDB(ctx, job, artifact, &sent, time.Now().UnixMilli(), sum, 16)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sent.Bytes(), store.Bytes(artifactRDB)) || int64(sent.Len()) != sum.size || keys != 84 {
				t.Errorf("rdb mode sent %d bytes and %d keys, want the stored file's %d (%d counted) and 84", sent.Len(), keys, len(store.Bytes(artifactRDB)), sum.size)
			}
			continue
		}
		all := []int{}
		for db := range 16 {
			all = append(all, db)
		}
		b := newRDBBuilder(&sent, sum.rdbVersion, all, sum.keys, sum.expires, true, time.Now().UnixMilli(), 16)
		if _, err := readArtifact(ctx, job, artifact, true, b.add); err != nil {
			t.Fatal(err)
		}
		if err := b.finish(); err != nil {
			t.Fatal(err)
		}
		rinfo, err := parseRDB(bytes.NewReader(sent.Bytes()), nil, false)
		if err != nil {
			t.Fatalf("the built RDB does not walk: %v", err)
		}
		n := int64(0)
		for _, k := range rinfo.keys {
			n += k
		}
		if n != 84 || b.keys != 84 || rinfo.functions != 1 || len(rinfo.keys) != len(seedDBs) {
			t.Errorf("built RDB: %d keys (%d written) in %d databases, %d function libraries; want 84 in %d, 1", n, b.keys, len(rinfo.keys), rinfo.functions, len(seedDBs))
		}
	}
}
