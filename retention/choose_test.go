package retention

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// TestChoose covers the selection rule on its own: letters are backups,
// newest first; "g" is good (verified or not), "b" failed its newest
// verification, "u" was never verified; the result marks kept ones upper
// case.
func TestChoose(t *testing.T) {
	for _, c := range []struct {
		backups string
		keep    int
		want    string
	}{
		{"", 1, ""},
		{"g", 1, "G"},
		{"b", 1, "B"},
		{"gggg", 2, "GGgg"},
		{"uuuu", 3, "UUUu"},
		{"gg", 5, "GG"},
		{"bbggg", 2, "BBGGg"},
		{"bbbb", 2, "BBbb"},
		{"bgbb", 3, "BGBb"},
		{"bgbgbg", 2, "BGBGbg"},
		{"gbbbg", 1, "Gbbbg"},
		{"gbbbg", 2, "GBBBG"},
	} {
		t.Run(fmt.Sprintf("%s/%d", c.backups, c.keep), func(t *testing.T) {
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var es []index.Entry
			for i, k := range c.backups {
				e := index.Entry{BackupIndex: &index.BackupIndex{BackupID: fmt.Sprintf("b%02d", i), FinishedAt: base.Add(-time.Duration(i) * time.Hour)}}
				switch k {
				case 'g':
					e.Verification = &index.Verification{OK: true}
				case 'b':
					e.Verification = &index.Verification{OK: false}
				}
				es = append(es, e)
			}
			// The input order must not matter.
			slices.Reverse(es)
			kept, drop := choose(es, c.keep)
			var got strings.Builder
			for i, e := range append(kept, drop...) {
				if e.BackupID != fmt.Sprintf("b%02d", i) {
					t.Fatalf("position %d is %s: not newest first", i, e.BackupID)
				}
				letter := string(c.backups[i])
				if i < len(kept) {
					letter = strings.ToUpper(letter)
				}
				got.WriteString(letter)
			}
			if got.String() != c.want {
				t.Errorf("choose(%s, %d) = %s, want %s", c.backups, c.keep, got.String(), c.want)
			}
		})
	}
}

// TestChooseGrandfatherFatherSon: keepDaily/keepWeekly/keepMonthly keep
// the newest good backup of each period (a scheduled backup on its slot's
// day), and the newest verified-good backup is never dropped.
func TestChooseGrandfatherFatherSon(t *testing.T) {
	const plan = "nightly"
	day := func(d int) time.Time { return time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC).AddDate(0, 0, d) }
	var es []index.Entry
	for d := range 70 { // 1 Jan to 11 Mar, one a day
		slot := day(d)
		es = append(es, index.Entry{BackupIndex: &index.BackupIndex{
			BackupID: requests.SlotID(plan, slot), Plan: plan,
			// Finished late: a day counts by its slot, not its finish.
			FinishedAt: slot.Add(23 * time.Hour),
		}})
	}
	// The oldest backup is the only verified one.
	es[0].Verification = &index.Verification{OK: true}
	p := Policy{Cluster: "c", Source: "s", Plan: plan, Keep: 1, KeepDaily: 3, KeepMonthly: 3}
	kept, drop := p.choose(es)
	var got []string
	for _, e := range kept {
		got = append(got, e.BackupID)
	}
	slices.Sort(got)
	want := []string{
		requests.SlotID(plan, day(0)),                                                                  // the newest verified-good one
		requests.SlotID(plan, day(30)),                                                                 // 31 Jan: January's newest
		requests.SlotID(plan, day(58)),                                                                 // 28 Feb: February's newest
		requests.SlotID(plan, day(67)), requests.SlotID(plan, day(68)), requests.SlotID(plan, day(69)), // the last 3 days (and March's newest)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
	if len(kept)+len(drop) != len(es) {
		t.Errorf("kept %d + dropped %d != %d", len(kept), len(drop), len(es))
	}
}
