package pitr

import (
	"reflect"
	"testing"

	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/jackc/pglogrepl"
)

// The route from a base backup on timeline 1 to timeline 2 replays
// timeline 1 up to the switch and timeline 2 from the segment it began
// in; a gap, or a fork before the backup's end, leaves no route.
func TestRouteFrom(t *testing.T) {
	lsn := func(s string) pglogrepl.LSN {
		l, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	entries, err := parseHistory([]byte("1\t0/30000A0\tno recovery target specified\n"))
	if err != nil || len(entries) != 1 || entries[0] != (TimelineEntry{TLI: 1, End: lsn("0/30000A0")}) {
		t.Fatalf("parseHistory: %v %v", entries, err)
	}
	if _, err := parseHistory([]byte("2\t0/3000000\n1\t0/4000000\n")); err == nil {
		t.Error("a history out of order was accepted")
	}
	h := &history{tl: 2, entries: entries}
	bb := base{d: &postgres.BaseDetails{Timeline: 1, WALSegmentSize: 16 << 20}, start: lsn("0/2000028"), stop: lsn("0/2000100")}
	from := segStart(bb.start, bb.d.WALSegmentSize)
	span := func(tl int32, a, b string) Span { return Span{Timeline: tl, Start: lsn(a), End: lsn(b)} }
	for _, c := range []struct {
		name  string
		spans []Span
		stop  string
		want  []leg
	}{
		{"whole parent", []Span{span(1, "0/2000000", "0/3000500"), span(2, "0/3000000", "0/3100000")}, "0/2000100",
			[]leg{{Timeline: 1, From: from, To: lsn("0/30000A0"), Switch: lsn("0/30000A0")}, {Timeline: 2, From: lsn("0/3000000"), To: lsn("0/3100000")}}},
		{"parent short of the switch", []Span{span(1, "0/2000000", "0/3000050"), span(2, "0/3000000", "0/3100000")}, "0/2000100",
			[]leg{{Timeline: 1, From: from, To: lsn("0/3000050"), Switch: lsn("0/30000A0")}, {Timeline: 2, From: lsn("0/3000000"), To: lsn("0/3100000")}}},
		{"gap", []Span{span(1, "0/2000000", "0/2800000"), span(2, "0/3000000", "0/3100000")}, "0/2000100", nil},
		{"fork before the backup ended", []Span{span(1, "0/2000000", "0/3000500"), span(2, "0/3000000", "0/3100000")}, "0/3000100", nil},
	} {
		b := bb
		b.stop = lsn(c.stop)
		r, ok := routeFrom(c.spans, b, from, h)
		if ok != (c.want != nil) {
			t.Errorf("%s: route %v, ok %v", c.name, r.legs, ok)
			continue
		}
		for i := range r.legs {
			r.legs[i].Span = Span{}
		}
		if ok && (!reflect.DeepEqual(r.legs, c.want) || r.Timeline() != 2) {
			t.Errorf("%s: legs %+v, want %+v", c.name, r.legs, c.want)
		}
	}
}
