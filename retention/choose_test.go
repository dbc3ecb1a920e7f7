package retention

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/index"
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
