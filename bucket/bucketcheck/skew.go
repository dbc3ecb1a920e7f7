package bucketcheck

import (
	"sync"
	"time"
)

// skewMeter narrows down the bucket's clock minus this machine's from
// answers: an answer's server time was taken between the request's start
// and its end by the local clock, and an S3 Date header is in whole seconds
// (the true time is up to a second later). Each sample bounds the skew;
// the meter keeps the tightest bounds that agree.
type skewMeter struct {
	mu     sync.Mutex
	n      int
	lo, hi time.Duration
}

func (m *skewMeter) add(before, after, server time.Time) {
	if server.IsZero() {
		return
	}
	var res time.Duration
	if server.Nanosecond() == 0 {
		res = time.Second
	}
	lo, hi := server.Sub(after), server.Add(res).Sub(before)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == 0 || max(m.lo, lo) > min(m.hi, hi) {
		// The first sample, or one that disagrees (a clock stepped):
		// start over from it.
		m.lo, m.hi = lo, hi
	} else {
		m.lo, m.hi = max(m.lo, lo), min(m.hi, hi)
	}
	m.n++
}

// estimate is the middle of the bounds; false without a sample.
func (m *skewMeter) estimate() (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lo + (m.hi-m.lo)/2, m.n > 0
}

// uncertainty is half the width of the bounds.
func (m *skewMeter) uncertainty() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return (m.hi - m.lo) / 2
}

// least is the smallest size of skew the bounds allow: 0 when they
// include no skew at all.
func (m *skewMeter) least() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.lo > 0:
		return m.lo
	case m.hi < 0:
		return -m.hi
	}
	return 0
}

// serverNow is local moved onto the bucket's clock; false without a
// sample.
func (m *skewMeter) serverNow(local time.Time) (time.Time, bool) {
	s, ok := m.estimate()
	return local.Add(s), ok
}
