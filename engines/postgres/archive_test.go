package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// archiveSQL adds to seedSQL the tables whose data is easy to miscount:
// empty, all NULL, a row that is only "\.", quoted names, partitions, an
// unlogged table, a table without columns.
const archiveSQL = `
CREATE TABLE public.empty (id int);
CREATE TABLE public.nulls (a text, b int);
INSERT INTO public.nulls SELECT NULL, NULL FROM generate_series(1, 37);
CREATE TABLE public.odd (t text);
INSERT INTO public.odd VALUES (E'\\.'), (E'\\.\n'), (E'\n\n\n'), (''), (E'\r\n'), (repeat(E'x\n', 100000));
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed Case ""quoted"" name" (id int);
INSERT INTO "Odd Schema"."Mixed Case ""quoted"" name" SELECT generate_series(1, 11);
CREATE TABLE public.measure (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.measure_2024 PARTITION OF public.measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.measure_2025 PARTITION OF public.measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.measure SELECT g, '2024-01-01'::date + g FROM generate_series(0, 600) g;
CREATE TABLE public.nocols ();
INSERT INTO public.nocols SELECT FROM generate_series(1, 4);
CREATE UNLOGGED TABLE public.scratch (id int);
INSERT INTO public.scratch SELECT generate_series(1, 5);
`

// dumpArchive runs pg_dump --format=custom --compress=0 of database db to
// a pipe, as a backup does, and returns the archive.
func dumpArchive(ctx context.Context, t testing.TB, db string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--compress=0", "--no-password", "-h", testHost, "-p", testPort, "-U", "postgres", "-d", db)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	return out.Bytes()
}

// TestScanArchiveCountsRows checks the archive reader against the
// server: every table's row count read from a real pg_dump archive equals
// count(*), and the reader finds every data block pg_restore would.
func TestScanArchiveCountsRows(t *testing.T) {
	ctx := context.Background()
	d := newTestDB(t)
	d.exec(ctx, t, "", seedSQL, archiveSQL)
	archive := dumpArchive(ctx, t, d.name)

	info, err := scanArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("scan a real archive: %v", err)
	}
	if info.Size != int64(len(archive)) {
		t.Errorf("read %d of the archive's %d bytes", info.Size, len(archive))
	}
	conn := adminConnect(ctx, t, d.name)
	defer conn.Close(ctx)
	tables, err := listTables(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, len(tables))
	for i := range all {
		all[i] = i
	}
	if err := countRows(ctx, conn, tables, all); err != nil {
		t.Fatal(err)
	}
	var withRows int
	for _, tb := range tables {
		got, ok := info.tableRows(tb.Schema, tb.Name)
		switch {
		case tb.Name == "measure" && !ok:
			// A partitioned table has no data of its own.
		case !ok:
			t.Errorf("%s.%s: the archive has no data block for it", tb.Schema, tb.Name)
		case got != tb.Rows:
			t.Errorf("%s.%s: the archive holds %d rows, count(*) says %d", tb.Schema, tb.Name, got, tb.Rows)
		}
		if tb.Rows > 0 {
			withRows++
		}
	}
	if withRows < 10 {
		t.Fatalf("only %d tables with rows: the seed did not run", withRows)
	}
	// Every entry that had data has its block, and nothing else has one.
	for _, e := range info.Entries {
		_, found := info.Blocks[e.ID]
		if e.HadData != found {
			t.Errorf("entry %d (%s %s): had data %v, block found %v", e.ID, e.Desc, e.Tag, e.HadData, found)
		}
		if e.OffsetState != offsetNotSet && e.OffsetState != offsetNoData {
			t.Errorf("entry %d (%s %s): offset state %d in an archive written to a pipe", e.ID, e.Desc, e.Tag, e.OffsetState)
		}
	}
	if _, ok := info.Blocks[blobsEntry(t, info)]; !ok {
		t.Error("the large objects' block was not found")
	}
}

func blobsEntry(t *testing.T, info *archiveInfo) int {
	for _, e := range info.Entries {
		if e.Desc == "BLOBS" {
			return e.ID
		}
	}
	t.Fatal("the archive has no BLOBS entry (the seed has large objects)")
	return 0
}

// TestScanArchiveRefusesDamage: a cut, a foreign file or a compressed
// archive is an error (never a wrong count, never a panic).
func TestScanArchiveRefusesDamage(t *testing.T) {
	ctx := context.Background()
	d := newTestDB(t)
	d.exec(ctx, t, "", `CREATE TABLE t (id int, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;`)
	archive := dumpArchive(ctx, t, d.name)
	info, err := scanArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside the header, the TOC, a block header and a chunk: the
	// cut at a block boundary (the end of the TOC) is a valid archive of
	// no data, so it is left out.
	for _, cut := range []int{3, 20, int(info.DataStart) - 7, int(info.DataStart) + 3, int(info.DataStart) + 400, len(archive) - 1} {
		_, err := scanArchive(bytes.NewReader(archive[:cut]))
		if !errors.Is(err, errArchive) {
			t.Errorf("archive cut at byte %d of %d: got %v, want a truncation error", cut, len(archive), err)
		}
	}
	if _, err := scanArchive(bytes.NewReader([]byte("-- PostgreSQL database dump\n"))); !errors.Is(err, errArchive) {
		t.Errorf("a plain SQL dump: got %v, want an error", err)
	}
	cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--compress=6", "-h", testHost, "-p", testPort, "-U", "postgres", "-d", d.name)
	compressed, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scanArchive(bytes.NewReader(compressed)); !errors.Is(err, errArchive) {
		t.Errorf("a compressed archive: got %v, want an error", err)
	}
}

// FuzzScanArchive: whatever the bytes, the reader returns (an error or
// an answer) without panicking or allocating without bound.
func FuzzScanArchive(f *testing.F) {
	f.Add([]byte("PGDMP\x01\x0e\x00\x04\x08\x01"))
	f.Add(tinyArchive("1\n", "2\n"))
	f.Add(append([]byte("PGDMP\x01\x0e\x00\x04\x08\x01\x00\x00\x00\x00\x00"), bytes.Repeat([]byte{0}, 64)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := scanArchive(bytes.NewReader(b))
		if err == nil && info.Size != int64(len(b)) {
			t.Fatalf("accepted %d bytes of %d", info.Size, len(b))
		}
	})
}

// TestRowCounter: rows are lines less pg_dump's end marker, however the
// data is cut into chunks.
func TestRowCounter(t *testing.T) {
	cases := []struct {
		data string
		rows int64
	}{
		{"", 0},
		{"\\.\n\n\n", 0},
		{"1\ta\n\\.\n\n\n", 1},
		{"1\ta\n2\tb\n\\.\n\n\n", 2},
		{"1\ta\n2\tb\n", 2},        // no marker
		{"\n\n\n\\.\n\n\n", 3},     // a table without columns: its rows are empty lines
		{"x\\\\.\n\\.\n\n\n", 1},   // a row ending in an escaped backslash and a dot
		{"\\\\.\n\\.\n\n\n", 1},    // a row that is a backslash and a dot
		{"a\\.\n", 1},              // "\." ends a longer line: a row
		{"1\n2\n3\n\\.\n", 3},      // the marker without blank lines
		{"row\n" + "\\.\n\n\n", 1}, // the marker alone in the last chunk
		{"long row " + string(make([]byte, 40)) + "\n\\.\n\n\n", 1},
	}
	for _, c := range cases {
		for cut := 0; cut <= len(c.data); cut++ {
			for _, size := range []int{1, 3, 7, len(c.data) + 1} {
				var rc rowCounter
				rc.write([]byte(c.data[:cut]))
				rest := []byte(c.data[cut:])
				for len(rest) > 0 {
					n := min(size, len(rest))
					rc.write(rest[:n])
					rest = rest[n:]
				}
				if got := rc.rows(); got != c.rows {
					t.Fatalf("%q cut at %d, chunks of %d: %d rows, want %d", c.data, cut, size, got, c.rows)
				}
			}
		}
	}
}

// TestSetDataOffsets: an archive written to a pipe, with the offsets set
// by setDataOffsets, points at its data blocks exactly where pg_dump's own
// archive of the same database, written to a file, does.
func TestSetDataOffsets(t *testing.T) {
	ctx := context.Background()
	d := newTestDB(t)
	d.exec(ctx, t, "", seedSQL, archiveSQL)
	piped := dumpArchive(ctx, t, d.name)
	file := filepath.Join(t.TempDir(), "byfile.dump")
	cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--compress=0", "-h", testHost, "-p", testPort, "-U", "postgres", "-d", d.name, "-f", file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_dump -f: %v: %s", err, out)
	}
	byFile, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want, err := scanArchive(bytes.NewReader(byFile))
	if err != nil {
		t.Fatal(err)
	}

	info, err := scanArchive(bytes.NewReader(piped))
	if err != nil {
		t.Fatal(err)
	}
	patched := filepath.Join(t.TempDir(), "patched.dump")
	if err := os.WriteFile(patched, piped, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(patched, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := setDataOffsets(f, info)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("setDataOffsets: %v", err)
	}
	if n != len(info.Blocks) || n < 10 {
		t.Errorf("set %d offsets for %d data blocks", n, len(info.Blocks))
	}
	b, _ := os.ReadFile(patched)
	if len(b) != len(piped) {
		t.Fatalf("the archive changed size: %d bytes, was %d", len(b), len(piped))
	}
	got, err := scanArchive(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("scan the patched archive: %v", err)
	}
	offsetOf := func(a *archiveInfo, raw []byte) map[string]string {
		m := map[string]string{}
		for _, e := range a.Entries {
			m[e.Desc+" "+e.Namespace+"."+e.Tag] = fmt.Sprintf("state %d at %x", e.OffsetState, raw[e.OffsetAt+1:e.OffsetAt+1+int64(a.OffSize)])
		}
		return m
	}
	w, g := offsetOf(want, byFile), offsetOf(got, b)
	if len(w) != len(g) {
		t.Fatalf("%d TOC entries in pg_dump's file, %d in the patched archive", len(w), len(g))
	}
	for k, v := range w {
		if g[k] != v {
			t.Errorf("%s: pg_dump -f wrote %s, the patched archive has %s", k, v, g[k])
		}
	}
	// pg_restore reads it.
	if out, err := exec.CommandContext(ctx, "pg_restore", "-l", patched).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore -l of the patched archive: %v: %s", err, out)
	}
}

// BenchmarkScanArchive measures the archive reader on a real archive of
// narrow rows (the worst case: a chunk header per row), to show what
// reading row counts off the stream costs a backup:
//
//	go test -run '^$' -bench ScanArchive ./engines/postgres
func BenchmarkScanArchive(b *testing.B) {
	ctx := context.Background()
	d := &testDB{name: "capsule_bench_scan_" + randHex(4)}
	admin := adminConnect(ctx, b, "postgres")
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+ident(d.name)); err != nil {
		b.Fatal(err)
	}
	defer admin.Exec(context.Background(), `DROP DATABASE `+ident(d.name)+` WITH (FORCE)`)
	conn := adminConnect(ctx, b, d.name)
	_, err := conn.Exec(ctx, `CREATE TABLE narrow AS SELECT g AS id, g % 97 AS k, md5(g::text) AS v FROM generate_series(1, 1000000) g`)
	conn.Close(ctx)
	if err != nil {
		b.Fatal(err)
	}
	archive := dumpArchive(ctx, b, d.name)
	b.SetBytes(int64(len(archive)))
	b.ResetTimer()
	for b.Loop() {
		info, err := scanArchive(bytes.NewReader(archive))
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := info.tableRows("public", "narrow"); n != 1000000 {
			b.Fatalf("%d rows", n)
		}
	}
}

// tinyArchive builds a minimal custom archive (version 1.14, as pg_dump
// 15 writes): one TABLE DATA entry, public.t, whose data is rows, sent
// one chunk per row, then pg_dump's end marker.
func tinyArchive(rows ...string) []byte {
	var b bytes.Buffer
	putInt := func(v int) {
		sign := byte(0)
		if v < 0 {
			sign, v = 1, -v
		}
		b.WriteByte(sign)
		for range 4 {
			b.WriteByte(byte(v))
			v >>= 8
		}
	}
	putStr := func(s string, null bool) {
		if null {
			putInt(-1)
			return
		}
		putInt(len(s))
		b.WriteString(s)
	}
	b.WriteString("PGDMP")
	b.Write([]byte{1, 14, 0, 4, 8, archiveCustom})
	putInt(0) // compression level
	for range 7 {
		putInt(1)
	}
	putStr("db", false)
	putStr("15.20", false)
	putStr("15.20", false)
	putInt(1) // TOC entries
	putInt(7) // dumpId
	putInt(1) // had a dumper
	for _, s := range []string{"1259", "16384", "t", "TABLE DATA"} {
		putStr(s, false)
	}
	putInt(3) // section: data
	for _, s := range []string{"", "", "COPY public.t (v) FROM stdin;\n", "public", "", "heap", "owner", "false"} {
		putStr(s, false)
	}
	putStr("", true) // no dependencies
	b.WriteByte(offsetNotSet)
	b.Write(make([]byte, 8))
	b.WriteByte(blockData)
	putInt(7)
	for _, r := range append(rows, "\\.\n\n\n") {
		putInt(len(r))
		b.WriteString(r)
	}
	putInt(0)
	return b.Bytes()
}

func TestScanTinyArchive(t *testing.T) {
	a := tinyArchive("a\n", "b\n", "c\\nd\n")
	info, err := scanArchive(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := info.tableRows("public", "t"); !ok || n != 3 {
		t.Fatalf("public.t: %d rows (found %v), want 3", n, ok)
	}
	// The same, read one byte at a time: the slow path across refills.
	info, err = scanArchive(iotest.OneByteReader(bytes.NewReader(a)))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := info.tableRows("public", "t"); n != 3 {
		t.Fatalf("read byte by byte: %d rows, want 3", n)
	}
}
