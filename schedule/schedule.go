package schedule

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MinPeriod is the shortest period a plan may have: slot ids have
// one-second resolution.
const MinPeriod = time.Second

// Schedule says when a plan's slots begin: every Period (slots are
// multiples of it since the Unix epoch, in UTC) or at the fire times of a
// cron expression (in UTC).
type Schedule struct {
	// Spec is the schedule as written ("24h", "0 3 * * *").
	Spec string
	// Period is set for a period schedule, zero for a cron one.
	Period time.Duration
	cron   cron.Schedule
}

var (
	periodRe = regexp.MustCompile(`^([0-9]+)(s|m|h)$`)
	// decimalRe is the old capsule service's period: a decimal number and
	// a unit s, m or h ("1.5h").
	decimalRe = regexp.MustCompile(`^[0-9]+\.[0-9]+(s|m|h)$`)
)

// maxPeriod is the longest period: a century.
const maxPeriod = 100 * 365 * 24 * time.Hour

// cronParser reads the standard five fields (minute hour day-of-month
// month day-of-week) and the @hourly/@daily/... descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse reads a period "<number><unit>" (unit s, m or h; at least
// 1s; the number may have a decimal part, "1.5h", as the old capsule
// service accepted), a Go duration ("1h30m"), "@every <duration>" (a
// period), or a cron expression: five fields or a descriptor such as
// @daily, evaluated in UTC. A period must be a whole number of seconds.
func Parse(spec string) (Schedule, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return Schedule{}, errors.New("is empty: want a period such as 24h or 30m, or a cron expression")
	}
	if m := periodRe.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n <= 0 {
			return Schedule{}, fmt.Errorf("%q: the number must be positive", spec)
		}
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[m[2]]
		if n > int64(maxPeriod/unit) {
			return Schedule{}, fmt.Errorf("%q: longer than a century", spec)
		}
		return Schedule{Spec: s, Period: time.Duration(n) * unit}, nil
	}
	if decimalRe.MatchString(s) || goDuration(s) {
		// time.ParseDuration reads fractions exactly ("1.5h" is 5400s).
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			return Schedule{}, fmt.Errorf("%q: %v", spec, err)
		case d <= 0:
			return Schedule{}, fmt.Errorf("%q: the period must be positive", spec)
		case d > maxPeriod:
			return Schedule{}, fmt.Errorf("%q: longer than a century", spec)
		case d%time.Second != 0:
			return Schedule{}, fmt.Errorf("%q: a period must be a whole number of seconds (slots have one-second resolution)", spec)
		}
		return Schedule{Spec: s, Period: d}, nil
	}
	if rest, ok := strings.CutPrefix(s, "@every "); ok {
		// robfig/cron's @every counts from the time it is scheduled, which
		// has no slots that replicas agree on: take it as a period.
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return Schedule{}, fmt.Errorf("%q: %v", spec, err)
		}
		if d < MinPeriod || d%time.Second != 0 {
			return Schedule{}, fmt.Errorf("%q: an @every period must be a whole number of seconds, at least %s", spec, MinPeriod)
		}
		return Schedule{Spec: s, Period: d}, nil
	}
	if strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=") {
		return Schedule{}, fmt.Errorf("%q: time zones are not supported: cron expressions are evaluated in UTC", spec)
	}
	c, err := cronParser.Parse(s)
	if err != nil {
		return Schedule{}, fmt.Errorf("%q is neither a period (<number><unit>, unit s, m or h) nor a cron expression (%v)", spec, err)
	}
	// A cron expression that never fires (30 February) has no slots.
	if c.Next(time.Unix(0, 0).UTC()).IsZero() {
		return Schedule{}, fmt.Errorf("%q: the cron expression never fires", spec)
	}
	return Schedule{Spec: s, cron: c}, nil
}

// goDuration reports whether s reads as a Go duration ("1h30m", "90m0s"):
// a cron expression or descriptor never does.
func goDuration(s string) bool { return durationRe.MatchString(s) }

// durationRe is the shape of a Go duration: numbers with units, no spaces.
var durationRe = regexp.MustCompile(`^-?([0-9]*\.?[0-9]+(ns|us|µs|ms|s|m|h))+$`)

// IsCron reports whether the schedule is a cron expression.
func (s Schedule) IsCron() bool { return s.cron != nil }

// Slot returns the start of the slot that holds now: for a period, now
// rounded down to a multiple of it since the Unix epoch; for a cron
// expression, its latest fire time at or before now. Every replica computes
// the same slot for the same instant. The zero time when there is none.
func (s Schedule) Slot(now time.Time) time.Time {
	now = now.UTC()
	if s.cron == nil {
		if s.Period <= 0 {
			return time.Time{}
		}
		ns := now.UnixNano()
		slot := ns - ns%int64(s.Period)
		if ns < 0 && ns%int64(s.Period) != 0 {
			slot -= int64(s.Period)
		}
		return time.Unix(0, slot).UTC()
	}
	// cron only looks forward: step back until a fire time falls in
	// (now-back, now], doubling the step, then walk forward to the last one.
	end := now.Truncate(time.Second)
	for back := time.Minute; back <= 8*366*24*time.Hour; back *= 2 {
		from := end.Add(-back)
		next := s.cron.Next(from)
		if next.IsZero() || next.After(end) {
			continue
		}
		last := next
		for {
			n := s.cron.Next(last)
			if n.IsZero() || n.After(end) {
				return last.UTC()
			}
			last = n
		}
	}
	return time.Time{}
}

// Next returns the start of the slot after the one that holds now.
func (s Schedule) Next(now time.Time) time.Time {
	if s.cron == nil {
		if s.Period <= 0 {
			return time.Time{}
		}
		return s.Slot(now).Add(s.Period)
	}
	return s.cron.Next(now.UTC()).UTC()
}

// String returns the spec.
func (s Schedule) String() string { return s.Spec }
