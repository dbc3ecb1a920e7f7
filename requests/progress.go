package requests

import "time"

// Percent is how far the run (or its current pass) is, from 0 to 100,
// by raw bytes against TotalBytes; ok is false when no total is known.
// A backup's estimate can be passed: then it stays at 100.
func (p Progress) Percent() (pct float64, ok bool) {
	if p.TotalBytes <= 0 {
		return 0, false
	}
	return min(100, 100*float64(p.Bytes)/float64(p.TotalBytes)), true
}

// Rate is the raw bytes moved per second since StartedAt, by the holder's
// clock (UpdatedAt); 0 when it cannot be told.
func (p Progress) Rate() float64 {
	if p.StartedAt.IsZero() || p.Bytes <= 0 {
		return 0
	}
	d := p.UpdatedAt.Sub(p.StartedAt)
	if d <= 0 {
		return 0
	}
	return float64(p.Bytes) / d.Seconds()
}

// ETA is how long the rest of TotalBytes takes at Rate; ok is false
// when there is no total, no rate, or the total (an estimate) is passed.
func (p Progress) ETA() (eta time.Duration, ok bool) {
	rate := p.Rate()
	if p.TotalBytes <= 0 || rate <= 0 || p.Bytes >= p.TotalBytes {
		return 0, false
	}
	return time.Duration(float64(p.TotalBytes-p.Bytes) / rate * float64(time.Second)), true
}
