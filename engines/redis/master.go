package redis

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fakeMaster is just enough of the master side of Redis's replication
// protocol for one full sync: the restore makes the target a replica of
// the worker (REPLICAOF), and the target loads the RDB this sends as it
// loads any master's snapshot. Only the target may use it: the first
// command after an optional PING must be AUTH with the one-time token the
// restore set as the target's masterauth; anything else closes the
// connection. Once one connection has authenticated the listener is
// closed. Every read is bounded (a command of at most 16 arguments of at
// most 512 bytes) and has a deadline, so a stranger can neither hold the
// restore up nor make the worker allocate.
type fakeMaster struct {
	ln      net.Listener
	token   []byte
	replid  string // 40 hex digits
	mark    []byte // the diskless transfer's end mark: 40 random hex digits
	replica chan *replicaConn
	claimed atomic.Bool
	refused atomic.Int64 // connections refused
	pending atomic.Int64 // handshakes under way
	wg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once
}

// replicaConn is the target's authenticated replication connection,
// ready for the snapshot.
type replicaConn struct {
	conn  net.Conn
	br    *bufio.Reader
	eof   bool // the replica said capa eof: a diskless EOF-marked transfer
	psync bool // PSYNC (a +FULLRESYNC line first), not SYNC
}

const (
	handshakeTimeout = 10 * time.Second
	maxCommandArgs   = 16
	maxArgLen        = 512
	// maxPendingHandshakes bounds the connections read at once.
	maxPendingHandshakes = 8
)

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// listenMaster listens on ip, port 0.
func listenMaster(ip string, token string) (*fakeMaster, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen on %s for the target's replication connection: %w", ip, err)
	}
	m := &fakeMaster{ln: ln, token: []byte(token), replid: randomHex(20), mark: []byte(randomHex(20)),
		replica: make(chan *replicaConn, 1), done: make(chan struct{})}
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

func (m *fakeMaster) addr() *net.TCPAddr { return m.ln.Addr().(*net.TCPAddr) }

// close stops listening and closes every connection not handed over
// (and one that authenticated after waitReplica gave up).
func (m *fakeMaster) close() {
	m.once.Do(func() { close(m.done) })
	m.ln.Close()
	m.wg.Wait()
	select {
	case rc := <-m.replica:
		rc.conn.Close()
	default:
	}
}

func (m *fakeMaster) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		if m.claimed.Load() {
			m.refused.Add(1)
			c.Close()
			continue
		}
		if m.pending.Add(1) > maxPendingHandshakes {
			m.pending.Add(-1)
			m.refused.Add(1)
			c.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer m.pending.Add(-1)
			stop := context.AfterFunc(doneCtx(m.done), func() { c.Close() })
			rc, err := m.handshake(c)
			if err != nil {
				stop()
				m.refused.Add(1)
				c.Close()
				return
			}
			if !stop() {
				c.Close()
				return
			}
			_ = c.SetDeadline(time.Time{})
			m.replica <- rc
		}()
	}
}

// doneCtx is a context canceled when done is closed.
func doneCtx(done chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	return ctx
}

// handshake answers the replica's handshake up to its PSYNC or SYNC.
func (m *fakeMaster) handshake(c net.Conn) (*replicaConn, error) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	rc := &replicaConn{conn: c, br: bufio.NewReaderSize(c, 4096)}
	authed := false
	for n := 0; n < 32; n++ {
		args, err := readCommand(rc.br)
		if err != nil {
			return nil, err
		}
		cmd := strings.ToUpper(args[0])
		reply := "+OK\r\n"
		switch {
		case cmd == "PING" && !authed && n == 0:
			// A replica pings before it authenticates, and takes
			// NOAUTH for an answer.
			reply = "-NOAUTH Authentication required.\r\n"
		case cmd == "AUTH" && !authed && (len(args) == 2 || len(args) == 3):
			if subtle.ConstantTimeCompare([]byte(args[len(args)-1]), m.token) != 1 {
				c.Write([]byte("-WRONGPASS invalid password\r\n"))
				return nil, errors.New("wrong password")
			}
			if !m.claimed.CompareAndSwap(false, true) {
				return nil, errors.New("a replica is already connected")
			}
			authed = true
			m.ln.Close() // one connection only
		case !authed:
			return nil, fmt.Errorf("%s before AUTH", clip(cmd))
		case cmd == "PING":
			reply = "+PONG\r\n"
		case cmd == "REPLCONF":
			for i := 1; i+1 < len(args); i += 2 {
				if strings.EqualFold(args[i], "capa") && strings.EqualFold(args[i+1], "eof") {
					rc.eof = true
				}
			}
		case cmd == "PSYNC" || cmd == "SYNC":
			rc.psync = cmd == "PSYNC"
			return rc, nil
		default:
			return nil, fmt.Errorf("unexpected command %s", clip(cmd))
		}
		if _, err := c.Write([]byte(reply)); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("too many commands in the handshake")
}

// readCommand reads one RESP array of bulk strings, within bounds. It
// skips empty lines: a loading replica sends newlines to its master.
func readCommand(br *bufio.Reader) ([]string, error) {
	var line string
	for {
		b, err := br.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == '\n' || b == '\r' {
			continue
		}
		br.UnreadByte()
		if line, err = readLine(br); err != nil {
			return nil, err
		}
		break
	}
	if len(line) < 2 || line[0] != '*' {
		return nil, fmt.Errorf("redis protocol: want an array, got %q", clip(line))
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 1 || n > maxCommandArgs {
		return nil, fmt.Errorf("redis protocol: array of %q", clip(line[1:]))
	}
	args := make([]string, 0, n)
	for range n {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if len(line) < 2 || line[0] != '$' {
			return nil, fmt.Errorf("redis protocol: want a bulk string, got %q", clip(line))
		}
		l, err := strconv.Atoi(line[1:])
		if err != nil || l < 0 || l > maxArgLen {
			return nil, fmt.Errorf("redis protocol: bulk of %q bytes", clip(line[1:]))
		}
		b := make([]byte, l+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		if b[l] != '\r' || b[l+1] != '\n' {
			return nil, errors.New("redis protocol: bulk string without CRLF")
		}
		args = append(args, string(b[:l]))
	}
	return args, nil
}

// readLine reads a line of at most the reader's buffer (4 KiB).
func readLine(br *bufio.Reader) (string, error) {
	l, err := br.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	if len(l) < 2 || l[len(l)-2] != '\r' {
		return "", errors.New("redis protocol: line without CRLF")
	}
	return string(l[:len(l)-2]), nil
}

// waitReplica returns the authenticated replica's connection, or an
// error after timeout.
func (m *fakeMaster) waitReplica(ctx context.Context, timeout time.Duration) (*replicaConn, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case rc := <-m.replica:
		return rc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errNoReplica
	}
}

var errNoReplica = errors.New("the target did not connect")

// deadlineWriter gives every write to the replica a deadline, so a
// replica that stops reading fails the transfer instead of hanging it.
type deadlineWriter struct {
	c net.Conn
	n int64
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	n, err := w.c.Write(p)
	w.n += int64(n)
	if err != nil {
		err = &replicaGoneError{err: err}
	}
	return n, err
}

// replicaGoneError is a write to the replica that failed: it dropped
// the transfer (its log says why: no room or no permission in its dir,
// its repl-timeout) or the network between them failed.
type replicaGoneError struct{ err error }

func (e *replicaGoneError) Error() string { return "the target dropped the transfer: " + e.err.Error() }
func (e *replicaGoneError) Unwrap() error { return e.err }

// limitWriter fails a write past its length: a length-prefixed transfer
// must be exactly as long as announced.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, errors.New("the snapshot is longer than announced")
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

// send answers the replica's PSYNC or SYNC with a full resync and the
// snapshot that build writes. A diskless EOF-marked transfer ends with
// the mark only after build returned nil (the artifact read to its end
// and its checksums checked): a transfer cut before the mark is one the
// replica discards without touching its data. For a replica without
// capa eof, size computes the snapshot's length first.
func (m *fakeMaster) send(rc *replicaConn, build func(io.Writer) error, size func() (int64, error)) error {
	dw := &deadlineWriter{c: rc.conn}
	bw := bufio.NewWriterSize(dw, 1<<20)
	if rc.psync {
		fmt.Fprintf(bw, "+FULLRESYNC %s 0\r\n", m.replid)
	}
	if rc.eof {
		fmt.Fprintf(bw, "$EOF:%s\r\n", m.mark)
		if err := build(bw); err != nil {
			return err
		}
		bw.Write(m.mark)
		return bw.Flush()
	}
	n, err := size()
	if err != nil {
		return err
	}
	fmt.Fprintf(bw, "$%d\r\n", n)
	lw := &limitWriter{w: bw, left: n}
	// Hold the last byte back until build succeeded: a length-prefixed
	// transfer is complete with its last byte.
	hw := &holdWriter{w: lw}
	if err := build(hw); err != nil {
		return err
	}
	if lw.left != 1 || !hw.has {
		return errors.New("the snapshot is shorter than announced")
	}
	lw.Write([]byte{hw.last})
	return bw.Flush()
}

// holdWriter writes all but the last byte it was given.
type holdWriter struct {
	w    io.Writer
	last byte
	has  bool
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if h.has {
		if _, err := h.w.Write([]byte{h.last}); err != nil {
			return 0, err
		}
	}
	if _, err := h.w.Write(p[:len(p)-1]); err != nil {
		return 0, err
	}
	h.last, h.has = p[len(p)-1], true
	return len(p), nil
}

// awaitLoad waits, after the transfer, for the replica's first REPLCONF
// ACK (which it sends once it has loaded the snapshot) or for it to
// close the connection (it failed to load, or went away). Other commands
// from the replica are read and dropped.
func (rc *replicaConn) awaitLoad(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { rc.conn.Close() })
	defer stop()
	for {
		// The replica may take long to load; it sends nothing meanwhile.
		_ = rc.conn.SetReadDeadline(time.Time{})
		args, err := readCommand(rc.br)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the target closed the replication connection after the transfer: %w", err)
		}
		if len(args) >= 2 && strings.EqualFold(args[0], "REPLCONF") && strings.EqualFold(args[1], "ACK") {
			return nil
		}
	}
}
