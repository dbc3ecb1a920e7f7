package redis

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// respConn is a bare RESP2 connection for the hot paths: the logical
// backup's fetches and the restore's replay. go-redis allocates a
// command object, an argument slice and a reply string for every key;
// at a million small keys that was most of the worker's CPU. Here
// commands are written straight into a buffer and replies are read in
// place, so a key costs no allocation of its own.
type respConn struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool
	num  []byte // scratch for numbers
}

// respError is an error reply.
type respError string

func (e respError) Error() string { return string(e) }

// dialRaw connects to the endpoint (TCP, a unix socket, or TLS over TCP)
// and closes the connection when ctx ends.
func (e *endpoint) dialRaw(ctx context.Context) (net.Conn, func(), error) {
	network := e.network
	if network == "" {
		network = "tcp"
	}
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, network, e.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", e.addr, err)
	}
	conn := raw
	if e.tls != nil {
		tc := tls.Client(raw, e.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("tls handshake with %s: %w", e.addr, err)
		}
		conn = tc
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return conn, func() { stop(); conn.Close() }, nil
}

// dialRESP opens a respConn and authenticates. The connection starts in
// database 0.
func (e *endpoint) dialRESP(ctx context.Context) (*respConn, error) {
	conn, closeFn, err := e.dialRaw(ctx)
	if err != nil {
		return nil, err
	}
	c := &respConn{conn: conn, br: bufio.NewReaderSize(conn, 1<<20), bw: bufio.NewWriterSize(conn, 1<<20)}
	c.stop = func() bool { closeFn(); return true }
	if e.password != "" {
		if e.user != "" {
			c.command("AUTH", e.user, e.password)
		} else {
			c.command("AUTH", e.password)
		}
		if err := c.bw.Flush(); err != nil {
			c.close()
			return nil, ctxErr(ctx, err)
		}
		if err := c.readOK(); err != nil {
			c.close()
			return nil, fmt.Errorf("auth: %w", ctxErr(ctx, err))
		}
	} else if e.user != "" {
		c.close()
		return nil, errors.New("a user in the url needs a password")
	}
	return c, nil
}

// ctxErr prefers the context's error: a connection closed because ctx
// ended reports that, not "use of closed network connection".
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *respConn) close() {
	if c.stop != nil {
		c.stop()
	}
}

// command writes a command of string arguments.
func (c *respConn) command(args ...string) {
	c.array(len(args))
	for _, a := range args {
		c.argString(a)
	}
}

// array starts a command of n arguments.
func (c *respConn) array(n int) {
	c.bw.WriteByte('*')
	c.bw.Write(strconv.AppendInt(c.num[:0], int64(n), 10))
	c.bw.WriteString("\r\n")
}

func (c *respConn) argHead(n int) {
	c.num = strconv.AppendInt(append(c.num[:0], '$'), int64(n), 10)
	c.num = append(c.num, '\r', '\n')
	c.bw.Write(c.num)
}

func (c *respConn) arg(b []byte) {
	c.argHead(len(b))
	c.bw.Write(b)
	c.bw.WriteString("\r\n")
}

func (c *respConn) argString(s string) {
	c.argHead(len(s))
	c.bw.WriteString(s)
	c.bw.WriteString("\r\n")
}

func (c *respConn) argInt(v int64) {
	var tmp [20]byte
	c.arg(strconv.AppendInt(tmp[:0], v, 10))
}

func (c *respConn) flush() error { return c.bw.Flush() }

// line reads one reply line without its CRLF; the slice is valid until
// the next read. An error reply is returned as a respError.
func (c *respConn) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A very long status or error line: read it whole.
		rest, err2 := c.br.ReadBytes('\n')
		l = append(append([]byte(nil), l...), rest...)
		err = err2
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(l) < 3 || l[len(l)-2] != '\r' {
		return nil, fmt.Errorf("redis protocol: bad line %q", clip(string(l)))
	}
	l = l[:len(l)-2]
	if l[0] == '-' {
		return nil, respError(l[1:])
	}
	return l, nil
}

func parseInt(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, errors.New("redis protocol: empty number")
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, fmt.Errorf("redis protocol: bad number %q", b)
	}
	var v int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("redis protocol: bad number %q", b)
		}
		v = v*10 + int64(ch-'0')
	}
	if neg {
		v = -v
	}
	return v, nil
}

// header reads a reply line and returns its type byte and number (for
// ':', '$' and '*').
func (c *respConn) header() (byte, int64, error) {
	l, err := c.line()
	if err != nil {
		return 0, 0, err
	}
	switch l[0] {
	case ':', '$', '*':
		n, err := parseInt(l[1:])
		return l[0], n, err
	}
	return l[0], 0, nil
}

// readOK reads a status reply.
func (c *respConn) readOK() error {
	l, err := c.line()
	if err != nil {
		return err
	}
	if l[0] != '+' {
		return fmt.Errorf("redis protocol: want a status reply, got %q", clip(string(l)))
	}
	return nil
}

// readInt reads an integer reply.
func (c *respConn) readInt() (int64, error) {
	t, n, err := c.header()
	if err != nil {
		return 0, err
	}
	if t != ':' {
		return 0, fmt.Errorf("redis protocol: want an integer reply, got type %q", t)
	}
	return n, nil
}

// readArray reads an array header; -1 for a nil array.
func (c *respConn) readArray() (int, error) {
	t, n, err := c.header()
	if err != nil {
		return 0, err
	}
	if t != '*' {
		return 0, fmt.Errorf("redis protocol: want an array reply, got type %q", t)
	}
	return int(n), nil
}

// readBulk appends a bulk string reply to dst; nil is false for a nil
// reply.
func (c *respConn) readBulk(dst []byte) ([]byte, bool, error) {
	t, n, err := c.header()
	if err != nil {
		return dst, false, err
	}
	if t != '$' {
		return dst, false, fmt.Errorf("redis protocol: want a bulk reply, got type %q", t)
	}
	if n < 0 {
		return dst, false, nil
	}
	if n > maxPayloadLen {
		return dst, false, fmt.Errorf("redis protocol: bulk of %d bytes", n)
	}
	start := len(dst)
	dst = grow(dst, int(n)+2)
	if _, err := io.ReadFull(c.br, dst[start:]); err != nil {
		return dst[:start], false, err
	}
	return dst[:len(dst)-2], true, nil
}

// grow extends b by n bytes.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}
