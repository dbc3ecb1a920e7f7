package faultproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The faults. Those that forward the request first (AppliedReset,
// AppliedError, Cut, Slow) let it take effect on the server: a write is
// applied whatever the client is told.
const (
	// SlowDown answers 503 SlowDown without forwarding (throttling).
	SlowDown Kind = "slowdown"
	// InternalError answers 500 InternalError without forwarding.
	InternalError Kind = "error"
	// Reset resets the connection before forwarding: the request never
	// reaches the server.
	Reset Kind = "reset"
	// AppliedReset forwards the request and reads the server's answer,
	// then resets the connection: the write is applied, the answer lost.
	AppliedReset Kind = "applied-reset"
	// AppliedError forwards the request, then answers 500 InternalError
	// in place of the server's answer.
	AppliedError Kind = "applied-error"
	// Cut forwards the request, sends the answer's headers and part of
	// its body (at least one byte less than its Content-Length), then
	// closes the connection. Only GETs are cut; an answer too short to
	// cut (under 2 bytes, or of unknown length) is lost as AppliedReset.
	Cut Kind = "cut"
	// Slow forwards the request and holds its answer back for the rule's
	// Delay.
	Slow Kind = "slow"
)

// AllKinds is every Kind.
var AllKinds = []Kind{SlowDown, InternalError, Reset, AppliedReset, AppliedError, Cut, Slow}

// DefaultDelay is Slow's delay when a rule sets none.
const DefaultDelay = time.Second

// Rule gives the requests its filter selects a fault with probability
// Rate, of a kind drawn evenly from Kinds (those that apply to the
// request: Cut only to GETs).
type Rule struct {
	Filter
	// Rate is the share of matched requests that get a fault, 0 to 1.
	Rate float64
	// Kinds are the faults to draw from; nil means AllKinds.
	Kinds []Kind
	// Delay is how long Slow holds an answer; DefaultDelay when zero.
	Delay time.Duration
}

// Fault records one injected fault.
type Fault struct {
	Seq    int
	Op     Op
	Key    string
	Kind   Kind
	Detail string
}

// maxFaults bounds the faults a Proxy remembers (Stats counts them all).
const maxFaults = 10000

// Proxy is a running fault proxy. Its methods are safe for concurrent use.
type Proxy struct {
	up  *url.URL
	ln  net.Listener
	srv *http.Server
	tr  *http.Transport

	mu       sync.Mutex
	rng      *rand.Rand
	rules    []Rule
	holds    []*Hold
	seq      int
	requests map[Op]int
	matched  map[Op]int
	faults   map[Op]map[Kind]int
	recent   []Fault
	quirks   []Quirk
	creds    Credentials
	quirked  map[Quirk]int
}

// New starts a proxy to upstream (http://HOST:PORT) on a free loopback
// port, passing every request through until rules are set.
func New(upstream string, seed uint64) (*Proxy, error) {
	up, err := url.Parse(upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return nil, fmt.Errorf("faultproxy: upstream %q: want http(s)://HOST:PORT", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		up: up,
		ln: ln,
		tr: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
			// Bodies pass as they are: no Accept-Encoding is added and
			// nothing is decompressed.
			DisableCompression: true,
		},
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		requests: map[Op]int{},
		matched:  map[Op]int{},
		faults:   map[Op]map[Kind]int{},
		quirked:  map[Quirk]int{},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Start is New for a test: it fails the test on error and closes the
// proxy when the test ends.
func Start(t testing.TB, upstream string, seed uint64) *Proxy {
	t.Helper()
	p, err := New(upstream, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// URL is the proxy's base URL, to use as a client's S3 endpoint.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// SetRules replaces the rules; the first rule that matches a request
// decides its fate.
func (p *Proxy) SetRules(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = slices.Clone(rules)
}

// Off removes every rule: requests pass unchanged from now on (holds stay
// until released).
func (p *Proxy) Off() { p.SetRules() }

// Close stops the proxy, releasing every hold.
func (p *Proxy) Close() error {
	p.mu.Lock()
	holds := p.holds
	p.holds = nil
	p.mu.Unlock()
	for _, h := range holds {
		h.Release()
	}
	err := p.srv.Close()
	p.tr.CloseIdleConnections()
	return err
}

// Stats counts requests and injected faults.
type Stats struct {
	// Requests counts every request by operation.
	Requests map[Op]int
	// Matched counts the requests a rule selected (faulted or not).
	Matched map[Op]int
	// Faults counts the faults injected by operation and kind.
	Faults map[Op]map[Kind]int
	// Quirks counts the requests each quirk changed or answered.
	Quirks map[Quirk]int
}

// Total is the number of faults injected.
func (s Stats) Total() int {
	n := 0
	for _, m := range s.Faults {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// Of is the number of faults of kind k injected.
func (s Stats) Of(k Kind) int {
	n := 0
	for _, m := range s.Faults {
		n += m[k]
	}
	return n
}

// String lists, per operation, the requests and faults by kind.
func (s Stats) String() string {
	ops := make([]string, 0, len(s.Requests))
	for op := range s.Requests {
		ops = append(ops, string(op))
	}
	sort.Strings(ops)
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, "%s: %d requests", op, s.Requests[Op(op)])
		if m := s.Matched[Op(op)]; m > 0 && m != s.Requests[Op(op)] {
			fmt.Fprintf(&b, ", %d matched", m)
		}
		kinds := make([]string, 0)
		for k, n := range s.Faults[Op(op)] {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(kinds)
		if len(kinds) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(kinds, ", "))
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// Stats returns a copy of the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Requests: map[Op]int{}, Matched: map[Op]int{}, Faults: map[Op]map[Kind]int{}, Quirks: map[Quirk]int{}}
	for q, n := range p.quirked {
		s.Quirks[q] = n
	}
	for op, n := range p.requests {
		s.Requests[op] = n
	}
	for op, n := range p.matched {
		s.Matched[op] = n
	}
	for op, m := range p.faults {
		s.Faults[op] = map[Kind]int{}
		for k, n := range m {
			s.Faults[op][k] = n
		}
	}
	return s
}

// Faults returns the most recent faults injected (up to 10000), oldest
// first.
func (p *Proxy) Faults() []Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.recent)
}

// fate is what decide chose for a request.
type fate struct {
	kind  Kind
	delay time.Duration
	// cut is where a Cut ends the body, as a share of its length: drawn
	// with the decision so that the sequence of draws does not depend
	// on when answers arrive.
	cut float64
	seq int
}

// decide counts the request and picks its fault, if any.
func (p *Proxy) decide(r *http.Request, op Op, key string) fate {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	p.requests[op]++
	f := fate{seq: p.seq}
	for _, rule := range p.rules {
		if !rule.matches(op, key) {
			continue
		}
		p.matched[op]++
		if rule.Rate <= 0 || p.rng.Float64() >= rule.Rate {
			return f
		}
		kinds := rule.Kinds
		if kinds == nil {
			kinds = AllKinds
		}
		var apply []Kind
		for _, k := range kinds {
			if k != Cut || r.Method == http.MethodGet {
				apply = append(apply, k)
			}
		}
		if len(apply) == 0 {
			return f
		}
		f.kind = apply[p.rng.IntN(len(apply))]
		f.delay = rule.Delay
		if f.delay <= 0 {
			f.delay = DefaultDelay
		}
		if f.kind == Cut {
			f.cut = p.rng.Float64()
		}
		return f
	}
	return f
}

func (p *Proxy) record(seq int, op Op, key string, k Kind, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.faults[op] == nil {
		p.faults[op] = map[Kind]int{}
	}
	p.faults[op][k]++
	if len(p.recent) == maxFaults {
		p.recent = slices.Delete(p.recent, 0, maxFaults/10)
	}
	p.recent = append(p.recent, Fault{Seq: seq, Op: op, Key: key, Kind: k, Detail: detail})
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, key := Classify(r)
	if !p.wait(r.Context(), op, key) {
		return
	}
	f := p.decide(r, op, key)
	kind, seq := f.kind, f.seq
	switch kind {
	case SlowDown:
		p.record(seq, op, key, kind, "")
		s3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.", seq)
		return
	case InternalError:
		p.record(seq, op, key, kind, "")
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.", seq)
		return
	case Reset:
		p.record(seq, op, key, kind, "")
		reset(w)
		return
	}
	if p.quirk(w, r, op, key, seq) {
		return
	}
	resp, err := p.forward(r)
	if err != nil {
		http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	switch kind {
	case AppliedReset:
		_, _ = io.Copy(io.Discard, resp.Body)
		p.record(seq, op, key, kind, fmt.Sprintf("server answered %d", resp.StatusCode))
		reset(w)
	case AppliedError:
		_, _ = io.Copy(io.Discard, resp.Body)
		p.record(seq, op, key, kind, fmt.Sprintf("server answered %d", resp.StatusCode))
		s3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.", seq)
	case Cut:
		if resp.ContentLength < 2 {
			_, _ = io.Copy(io.Discard, resp.Body)
			p.record(seq, op, key, AppliedReset, fmt.Sprintf("answer of %d bytes too short to cut", resp.ContentLength))
			reset(w)
			return
		}
		// 1 to length-1 bytes.
		n := 1 + int64(f.cut*float64(resp.ContentLength-1))
		p.record(seq, op, key, kind, fmt.Sprintf("%d of %d bytes", n, resp.ContentLength))
		cut(w, resp, n)
	case Slow:
		p.record(seq, op, key, kind, f.delay.String())
		t := time.NewTimer(f.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		relay(w, resp)
	default:
		relay(w, resp)
	}
}

// hopHeaders are the hop-by-hop headers a proxy does not pass on.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func dropHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// forward sends r to the server as it came, Host header included (the
// signature covers it), and returns the server's answer.
func (p *Proxy) forward(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.up.Scheme, p.up.Host
	out.Host = r.Host
	dropHop(out.Header)
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	}
	// Trailer values arrive with the end of the body: share the map.
	out.Trailer = r.Trailer
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // the Transport adds none
	}
	return p.tr.RoundTrip(out)
}

// relay passes the server's answer on.
func relay(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	dropHop(h)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// s3Error answers with an S3 error document.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string, seq int) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("X-Amz-Request-Id", "faultproxy-"+strconv.Itoa(seq))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s (injected by faultproxy)</Message><Resource>%s</Resource><RequestId>faultproxy-%d</RequestId></Error>`,
		code, msg, r.URL.Path, seq)
}

// reset drops the client's connection with a TCP reset.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// cut sends resp's status line, headers and the first n bytes of its
// body, then closes the connection in order (FIN), so the client reads
// exactly those bytes and then an unexpected end of the body.
func cut(w http.ResponseWriter, resp *http.Response, n int64) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	h := resp.Header.Clone()
	dropHop(h)
	h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	bw := bufio.NewWriter(conn)
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	_ = h.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_, _ = io.CopyN(bw, resp.Body, n)
	if err := bw.Flush(); err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	// Wait (briefly) for the client to close its side, so that unread
	// input does not turn the close into a reset.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, brw)
}

// Hold parks the requests a filter selects until Release: a test's way to
// stop a client at a chosen call without sleeping.
type Hold struct {
	f        Filter
	held     chan struct{}
	heldOnce sync.Once
	release  chan struct{}
	relOnce  sync.Once
	mu       sync.Mutex
	n        int
}

// Hold starts parking the requests f selects, before they are forwarded
// (and before any rule is applied to them).
func (p *Proxy) Hold(f Filter) *Hold {
	h := &Hold{f: f, held: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.holds = append(p.holds, h)
	p.mu.Unlock()
	return h
}

// Held is closed when the first request is parked.
func (h *Hold) Held() <-chan struct{} { return h.held }

// Count is the number of requests parked so far (released or not).
func (h *Hold) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Release lets the parked requests go on, and every later one pass.
func (h *Hold) Release() { h.relOnce.Do(func() { close(h.release) }) }

// wait parks r in every unreleased hold that selects it; it reports false
// when the client went away meanwhile.
func (p *Proxy) wait(ctx context.Context, op Op, key string) bool {
	p.mu.Lock()
	holds := slices.Clone(p.holds)
	p.mu.Unlock()
	for _, h := range holds {
		if !h.f.matches(op, key) {
			continue
		}
		select {
		case <-h.release:
			continue
		default:
		}
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
		h.heldOnce.Do(func() { close(h.held) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return false
		}
	}
	return true
}
