package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// A parallel restore streams the archive from the bucket; nothing the
// size of the data touches local disk. It runs in three steps:
//
//  1. The archive's header and table of contents (kilobytes: the data
//     blocks come after it) are read from the stream and written to a
//     small file in a staging directory. pg_restore --section=pre-data
//     reads that file and creates the schema: types, tables, functions.
//  2. The engine reads the data blocks as they stream past and loads
//     every table's rows with COPY over restoreJobs connections: a
//     table's rows are cut, at line boundaries, into batches that
//     whichever connection is free takes, so that even one large table
//     loads over every connection. The archive is read to its end, where
//     its sha256 is checked.
//  3. pg_restore --jobs=N --section=data --section=post-data, with a list
//     that leaves out the TABLE DATA entries, reads the same small file
//     and sets the sequences, builds the indexes and constraints over N
//     connections, and adds the triggers, rules and privileges.
//
// The COPY statements come from the archive, which anyone who can write
// the bucket can forge: each must be COPY <table> [(<columns>)] FROM
// stdin, nothing else (pg_restore runs whatever the archive holds), or
// the restore fails. An
// archive this path does not know how to load (large objects, a data
// block that is not a table's) is restored by copying it to local disk
// for pg_restore --jobs, as before.

// copyBatch is how many bytes of a table's COPY data go to a connection
// at a time; copyKeep is how many bytes at the end of the data are held
// back until the block ends, so that pg_dump's end-of-data marker can be
// taken off.
const (
	copyBatch = 256 << 10
	copyKeep  = 16
)

// errNotStreamable says the streaming parallel restore cannot load an
// archive; the restore then stages it.
var errNotStreamable = errors.New("archive not loadable by the streaming parallel restore")

// errForgedCopy is a TABLE DATA entry whose statement pg_dump would not
// have written.
var errForgedCopy = errors.New("refusing to restore the archive")

// recorder keeps the bytes read through it until stop.
type recorder struct {
	r    io.Reader
	buf  []byte
	stop bool
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if !r.stop {
		r.buf = append(r.buf, p[:n]...)
	}
	return n, err
}

// streamTOC reads an archive's header and TOC from r and returns the
// reader positioned at the first data block, what it read, and the TOC's
// bytes as they were.
func streamTOC(r io.Reader) (*archiveReader, *archiveInfo, []byte, error) {
	rec := &recorder{r: r}
	ar := &archiveReader{br: bufio.NewReaderSize(rec, 256<<10), format: archiveCustom}
	info, err := ar.header()
	if err == nil {
		err = ar.toc(info)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	info.DataStart = ar.pos
	rec.stop = true
	toc := append([]byte(nil), rec.buf[:ar.pos]...)
	rec.buf = nil
	return ar, info, toc, nil
}

var encodingSet = regexp.MustCompile(`^SET client_encoding = '([A-Za-z0-9_]+)';\s*$`)

// streamable says why the streaming restore cannot load info's archive,
// or returns its client encoding.
func streamable(info *archiveInfo) (encoding string, why error) {
	for _, e := range info.Entries {
		switch {
		case e.Desc == "ENCODING":
			m := encodingSet.FindStringSubmatch(e.Defn)
			if m == nil {
				return "", fmt.Errorf("%w: its ENCODING entry is %q", errNotStreamable, e.Defn)
			}
			encoding = m[1]
		case e.Desc == "TABLE DATA":
			if !validCopy(e.CopyStmt) {
				// Not what pg_dump writes: a forged archive.
				return "", fmt.Errorf("%w: TABLE DATA %s.%s has the statement %q, not COPY <table> (<columns>) FROM stdin", errForgedCopy, e.Namespace, e.Tag, clip(e.CopyStmt))
			}
		case e.HadData && e.Desc != "BLOBS":
			return "", fmt.Errorf("%w: it holds data of a %s entry", errNotStreamable, e.Desc)
		}
	}
	if encoding == "" {
		return "", fmt.Errorf("%w: it names no client encoding", errNotStreamable)
	}
	return encoding, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// validCopy accepts exactly what pg_dump writes as a table's copyStmt:
// COPY <name>[.<name>] [(<name>, …)] FROM stdin; where each name is a
// plain lower-case identifier or a double-quoted one.
func validCopy(s string) bool {
	s, ok := strings.CutPrefix(strings.TrimRight(s, "\n"), "COPY ")
	if !ok {
		return false
	}
	if s, ok = strings.CutSuffix(s, " FROM stdin;"); !ok {
		return false
	}
	rest, ok := cutIdent(s)
	if !ok {
		return false
	}
	if r, ok := strings.CutPrefix(rest, "."); ok {
		if rest, ok = cutIdent(r); !ok {
			return false
		}
	}
	if rest == "" || rest == " " { // pg_dump writes "COPY t  FROM stdin;" for no columns
		return true
	}
	cols, ok := strings.CutPrefix(rest, " (")
	if !ok {
		return false
	}
	for {
		if cols, ok = cutIdent(cols); !ok {
			return false
		}
		if cols == ")" {
			return true
		}
		if cols, ok = strings.CutPrefix(cols, ", "); !ok {
			return false
		}
	}
}

// cutIdent takes one identifier off the front of s.
func cutIdent(s string) (rest string, ok bool) {
	if strings.HasPrefix(s, `"`) {
		for i := 1; i < len(s); i++ {
			if s[i] != '"' {
				continue
			}
			if i+1 < len(s) && s[i+1] == '"' {
				i++
				continue
			}
			return s[i+1:], i > 1
		}
		return "", false
	}
	i := 0
	for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] == '_' || i > 0 && (s[i] >= '0' && s[i] <= '9' || s[i] == '$')) {
		i++
	}
	return s[i:], i > 0
}

// restoreStreaming restores t's archive into t.side in parallel, as
// described above. It fails with errNotStreamable, having created
// nothing, when the archive needs the staged restore.
func (r *run) restoreStreaming(ctx context.Context, t *target, arts engines.ArtifactReader, args []string, log logrus.FieldLogger) error {
	jobs := r.j.ci.restoreJobs
	rc, err := arts.Open(ctx, t.b.Artifact)
	if err != nil {
		return fmt.Errorf("open artifact %s: %w", t.b.Artifact, err)
	}
	defer rc.Close()
	ar, info, toc, err := streamTOC(rc)
	if err != nil {
		// The staged restore reads the artifact to its end and says
		// whether it is damaged.
		return fmt.Errorf("%w: %w", errNotStreamable, err)
	}
	encoding, err := streamable(info)
	if err != nil {
		return err
	}
	parent := r.j.ci.stagingParent()
	sweepStaging(parent, log)
	if err := roomFor(parent, int64(len(toc))); err != nil {
		return fmt.Errorf("%w: %w", errNotStreamable, err)
	}
	dir, err := newStaging(parent)
	if err != nil {
		return err
	}
	defer func() {
		if err := dir.remove(); err != nil {
			log.WithFields(logrus.Fields{"dir": dir.dir, "error": err.Error()}).Error("could not remove the staging directory")
		}
	}()
	if _, err := dir.copyIn(bytes.NewReader(toc), "toc.dump", nil, nil); err != nil {
		return err
	}
	list := filepath.Join(dir.dir, "post-data.list")
	if err := os.WriteFile(list, restoreList(info), 0o600); err != nil {
		return fmt.Errorf("write restore list: %w", err)
	}

	if err := r.createSide(ctx, t, log); err != nil {
		return err
	}
	base := append([]string{"--format=custom", "--no-password", "--exit-on-error", "-d", dbArg(t.side)}, args...)
	start := time.Now()
	if err := r.j.tools.run(ctx, "pg_restore", append(append([]string{"--section=pre-data"}, base...), dir.path)); err != nil {
		return fmt.Errorf("restore the schema of database %s: %w", t.live, err)
	}
	schema := time.Since(start)
	start = time.Now()
	rows, err := r.loadData(ctx, t, ar, info, encoding, jobs)
	if err != nil {
		return err
	}
	data := time.Since(start)
	start = time.Now()
	post := append([]string{"--section=data", "--section=post-data", "--use-list=" + list, "--jobs=" + strconv.Itoa(jobs)}, base...)
	if err := r.j.tools.run(ctx, "pg_restore", append(post, dir.path), r.indexOptions(ctx, log)...); err != nil {
		return fmt.Errorf("restore the indexes and constraints of database %s: %w", t.live, err)
	}
	log.WithFields(logrus.Fields{"jobs": jobs, "rows": rows, "schemaSeconds": schema.Seconds(), "dataSeconds": data.Seconds(),
		"postDataSeconds": time.Since(start).Seconds(), "tocBytes": len(toc)}).Info("restored the archive streaming, in parallel")
	return nil
}

// indexMemory is the maintenance_work_mem of the sessions that build a
// restore's indexes when the server's is lower: an index sorted in
// memory is built with less CPU than one sorted in temporary files, and
// PostgreSQL's documentation advises raising it for restores. Each of
// restoreJobs sessions may use it once.
const indexMemory = 256 << 20

// indexOptions returns the PGOPTIONS for pg_restore's post-data
// sessions: maintenance_work_mem raised to indexMemory when the server's
// is lower.
func (r *run) indexOptions(ctx context.Context, log logrus.FieldLogger) []string {
	var kb int64
	if err := r.conn.QueryRow(ctx, `SELECT setting::bigint * pg_size_bytes('1' || unit) / 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'`).Scan(&kb); err != nil {
		log.WithField("error", err.Error()).Debug("could not read maintenance_work_mem")
		return nil
	}
	if kb<<10 >= indexMemory {
		return nil
	}
	return []string{fmt.Sprintf("PGOPTIONS=-c maintenance_work_mem=%dMB", indexMemory>>20)}
}

// restoreList is a pg_restore --use-list of every entry but those with
// data (TABLE DATA, BLOBS), which the engine loads itself.
func restoreList(info *archiveInfo) []byte {
	var b bytes.Buffer
	for _, e := range info.Entries {
		if e.HadData || e.Desc == "TABLE DATA" {
			continue
		}
		fmt.Fprintf(&b, "%d;\n", e.ID)
	}
	return b.Bytes()
}

// loadData reads the data blocks from ar to the archive's end and COPYs
// every table's rows into t.side over jobs connections. It returns how
// many rows it loaded.
func (r *run) loadData(ctx context.Context, t *target, ar *archiveReader, info *archiveInfo, encoding string, jobs int) (int64, error) {
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	setup := "SET client_encoding = " + literal(encoding) + "; SET standard_conforming_strings = on; SET search_path = ''; " +
		"SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET synchronous_commit = off"
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for range jobs {
		c, err := r.j.connect(ctx, t.side)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		if _, err := c.PgConn().Exec(ctx, setup).ReadAll(); err != nil {
			return 0, fmt.Errorf("set up a COPY session: %w", err)
		}
	}
	free := make(chan []byte, 4*jobs)
	queues := make([]chan *tableFeed, jobs)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		loadErr error
	)
	for i, c := range conns {
		queues[i] = make(chan *tableFeed, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range queues[i] {
				if ctx.Err() != nil {
					continue
				}
				br := &batchReader{ctx: ctx, in: f.batches, free: free}
				if _, err := c.PgConn().CopyFrom(ctx, br, f.sql); err != nil {
					err = fmt.Errorf("load table %s: %w", f.name, err)
					mu.Lock()
					if loadErr == nil {
						loadErr = err
					}
					mu.Unlock()
					cancel(err)
				}
			}
		}()
	}
	var rows int64
	sink := &dataSink{blob: r.blobLoader(ctx, t, setup, &conns)}
	sink.table = func(e *archiveEntry) (func([]byte), func() error) {
		f := &tableFeed{ctx: ctx, name: e.Namespace + "." + e.Tag, sql: e.CopyStmt, batches: make(chan []byte, 2*jobs), free: free}
		for _, q := range queues {
			q <- f
		}
		return f.write, func() error {
			f.end()
			rows += info.Rows[e.ID] // set before end is called
			if ctx.Err() != nil {
				return errLoadStopped
			}
			return nil
		}
	}
	readErr := ar.data(info, sink)
	if errors.Is(readErr, errLoadStopped) {
		readErr = nil
	} else if readErr != nil {
		cancel(readErr) // a table's feed may be left open
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if parent.Err() != nil {
		return 0, fmt.Errorf("restore database %s: %w", t.live, context.Cause(parent))
	}
	if loadErr != nil && readErr == nil {
		// The load failed: read the rest of the artifact, whose end
		// says whether the archive itself is damaged.
		if _, err := io.Copy(io.Discard, ar.br); err != nil {
			readErr = err
		}
	}
	var ce *engines.ChecksumError
	switch {
	case errors.As(readErr, &ce):
		return 0, readErr
	case readErr != nil:
		return 0, fmt.Errorf("restore database %s from artifact %s: %w", t.live, t.b.Artifact, readErr)
	case loadErr != nil:
		return 0, fmt.Errorf("restore database %s from artifact %s: %w", t.live, t.b.Artifact, loadErr)
	}
	return rows, nil
}

// blobLoader returns a dataSink.blob that writes each large object's
// data with lo_put over a connection of its own, opened for the first.
// The objects exist: the BLOB entries of the schema created them, as
// pg_restore does.
func (r *run) blobLoader(ctx context.Context, t *target, setup string, conns *[]*pgx.Conn) func(oid int64) (func([]byte), func() error) {
	var conn *pgx.Conn
	var err error
	buf := make([]byte, 0, copyBatch)
	return func(oid int64) (func([]byte), func() error) {
		var off int64
		put := func() {
			if err == nil && len(buf) > 0 {
				_, err = conn.Exec(ctx, `SELECT pg_catalog.lo_put($1::oid, $2::bigint, $3::bytea)`, uint32(oid), off, buf)
				off += int64(len(buf))
			}
			buf = buf[:0]
		}
		if conn == nil && err == nil {
			if conn, err = r.j.connect(ctx, t.side); err == nil {
				*conns = append(*conns, conn)
				_, err = conn.PgConn().Exec(ctx, setup).ReadAll()
			}
		}
		each := func(p []byte) {
			for len(p) > 0 && err == nil {
				n := min(len(p), cap(buf)-len(buf))
				buf = append(buf, p[:n]...)
				p = p[n:]
				if len(buf) == cap(buf) {
					put()
				}
			}
		}
		return each, func() error {
			put()
			if err != nil {
				return fmt.Errorf("load large object %d: %w", oid, err)
			}
			return nil
		}
	}
}

// errLoadStopped ends the reading of the data blocks when a COPY failed.
var errLoadStopped = errors.New("the load stopped")

// tableFeed cuts one table's COPY data into batches of whole lines.
type tableFeed struct {
	ctx     context.Context
	name    string
	sql     string
	batches chan []byte
	free    chan []byte
	cur     []byte
	stopped bool
}

func (f *tableFeed) buffer() []byte {
	select {
	case b := <-f.free:
		return b[:0]
	default:
		return make([]byte, 0, copyBatch+64<<10)
	}
}

func (f *tableFeed) send(b []byte) {
	if f.stopped {
		return
	}
	select {
	case f.batches <- b:
	case <-f.ctx.Done():
		f.stopped = true
	}
}

func (f *tableFeed) write(p []byte) {
	if f.cur == nil {
		f.cur = f.buffer()
	}
	f.cur = append(f.cur, p...)
	if len(f.cur) < copyBatch+copyKeep {
		return
	}
	cut := bytes.LastIndexByte(f.cur[:len(f.cur)-copyKeep], '\n') + 1
	if cut == 0 {
		return // one long row so far
	}
	next := append(f.buffer(), f.cur[cut:]...)
	f.send(f.cur[:cut])
	f.cur = next
}

// end sends the rest of the table's data, less pg_dump's end-of-data
// marker (a line "\." and blank lines: COPY FROM STDIN over the protocol
// takes only rows), and ends the table.
func (f *tableFeed) end() {
	b := f.cur
	n := len(b)
	for n > 0 && b[n-1] == '\n' {
		n--
	}
	// b begins at a line's start: every batch ends at one.
	if n >= 2 && b[n-2] == '\\' && b[n-1] == '.' && (n == 2 || b[n-3] == '\n') {
		b = b[:n-2]
	}
	if len(b) > 0 {
		f.send(b)
	}
	f.cur = nil
	close(f.batches)
}

// batchReader reads a table's batches, handing each back to free once
// read.
type batchReader struct {
	ctx  context.Context
	in   chan []byte
	free chan []byte
	cur  []byte
	off  int
}

func (b *batchReader) Read(p []byte) (int, error) {
	for b.off == len(b.cur) {
		if b.cur != nil {
			select {
			case b.free <- b.cur:
			default:
			}
			b.cur, b.off = nil, 0
		}
		select {
		case next, ok := <-b.in:
			if !ok {
				return 0, io.EOF
			}
			b.cur = next
		case <-b.ctx.Done():
			return 0, context.Cause(b.ctx)
		}
	}
	n := copy(p, b.cur[b.off:])
	b.off += n
	return n, nil
}
