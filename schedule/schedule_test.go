package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestParseSchedulePeriods(t *testing.T) {
	for spec, want := range map[string]time.Duration{
		"24h": 24 * time.Hour, "30m": 30 * time.Minute, "2s": 2 * time.Second, "@every 90s": 90 * time.Second,
		// The old capsule service's decimal periods, and Go durations.
		"1.5h": 90 * time.Minute, "0.5m": 30 * time.Second, "2.25h": 135 * time.Minute, "1h30m": 90 * time.Minute,
		"36h0m0s": 36 * time.Hour,
	} {
		s, err := Parse(spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		if s.IsCron() || s.Period != want {
			t.Errorf("%q: period %s cron %v, want %s", spec, s.Period, s.IsCron(), want)
		}
	}
}

func TestParseScheduleRejects(t *testing.T) {
	for spec, want := range map[string]string{
		"":                 "is empty",
		"0h":               "must be positive",
		"soon":             "neither a period",
		"1d":               "neither a period",
		"5 4 * *":          "neither a period",
		"0 0 30 2 *":       "never fires",
		"@every 500ms":     "whole number of seconds",
		"TZ=UTC 0 * * * *": "time zones",
		"0.5s":             "whole number of seconds",
		"1.0001h":          "whole number of seconds",
		"-1h":              "must be positive",
		"0.0h":             "must be positive",
		"1.5d":             "neither a period",
		"1.5":              "neither a period",
		"1000000.5h":       "longer than a century",
	} {
		_, err := Parse(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", spec, err, want)
		}
	}
}

func TestPeriodSlots(t *testing.T) {
	s, _ := Parse("6h")
	now := time.Date(2025, 3, 4, 13, 59, 59, 999, time.FixedZone("X", 3*3600)) // 10:59:59 UTC
	if got, want := s.Slot(now), time.Date(2025, 3, 4, 6, 0, 0, 0, time.UTC); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("slot %s, want %s", got, want)
	}
	if got, want := s.Next(now), time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next %s, want %s", got, want)
	}
	// A slot boundary belongs to the new slot.
	b := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	if got := s.Slot(b); !got.Equal(b) {
		t.Errorf("slot at the boundary %s, want %s", got, b)
	}
	two, _ := Parse("2s")
	if got := two.Slot(time.Unix(1001, 5e8)); got.Unix() != 1000 {
		t.Errorf("2s slot of 1001.5 = %d, want 1000", got.Unix())
	}
}

func TestCronSlots(t *testing.T) {
	daily, _ := Parse("30 3 * * *")
	if !daily.IsCron() {
		t.Fatal("not a cron schedule")
	}
	at := func(d, h, m, s int) time.Time { return time.Date(2025, 3, d, h, m, s, 0, time.UTC) }
	for _, c := range []struct{ now, want time.Time }{
		{at(4, 3, 30, 0), at(4, 3, 30, 0)},
		{at(4, 3, 29, 59), at(3, 3, 30, 0)},
		{at(4, 23, 0, 0), at(4, 3, 30, 0)},
	} {
		if got := daily.Slot(c.now); !got.Equal(c.want) {
			t.Errorf("slot at %s = %s, want %s", c.now, got, c.want)
		}
	}
	if got, want := daily.Next(at(4, 3, 30, 0)), at(5, 3, 30, 0); !got.Equal(want) {
		t.Errorf("next %s, want %s", got, want)
	}
	// Many fire times in a burst, long ago: the latest one wins.
	burst, _ := Parse("* 9 * * *")
	if got, want := burst.Slot(at(4, 14, 0, 0)), at(4, 9, 59, 0); !got.Equal(want) {
		t.Errorf("burst slot %s, want %s", got, want)
	}
	yearly, _ := Parse("@yearly")
	if got, want := yearly.Slot(at(4, 0, 0, 0)), time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("yearly slot %s, want %s", got, want)
	}
}
