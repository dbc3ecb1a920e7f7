package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

// progressView shows a followed request's progress on the error stream.
// On a terminal, while the run's total is known (a restore's recorded
// size, a backup's estimate), it is a bar with the percentage, the rate
// and the time left; otherwise, and whenever the error stream is a file
// or a pipe, it is one line per change, which a log keeps. The numbers
// are the worker's own (its lease's progress, renewed every third of the
// lease), never guessed between two renewals.
//
// A request that waits for a worker explains itself once it has waited
// explainAfter (by the bucket's clock), and again every explainAfter:
// who was seen working on the bucket lately (client.Explain).
type progressView struct {
	a    *app
	ctx  context.Context
	b    bucket.Reader
	w    io.Writer
	tty  bool
	bar  *progressbar.ProgressBar
	max  int64
	pass int

	last        string
	nextExplain time.Time
}

func (a *app) newProgressView(ctx context.Context, b bucket.Reader) *progressView {
	return &progressView{a: a, ctx: ctx, b: b, w: a.errOut, tty: isTerminal(a.errOut)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (v *progressView) update(st *client.Status) {
	switch {
	case st.Result != nil:
		v.finishBar(st.Status == requests.StatusSucceeded)
	case st.Lease != nil && st.Lease.Progress != nil && st.Lease.Progress.TotalBytes > 0 && v.tty:
		v.showBar(st.Lease)
		return
	case st.Lease == nil:
		v.explain(st)
	}
	if line := progressLine(st); line != v.last {
		v.finishBar(false)
		fmt.Fprintln(v.w, line)
		v.last = line
	}
}

// explain says why a pending request waits, once it has waited long
// enough.
func (v *progressView) explain(st *client.Status) {
	if st.Status != requests.StatusPending || time.Now().Before(v.nextExplain) {
		return
	}
	v.nextExplain = time.Now().Add(max(v.a.explainAfter, time.Second))
	p, err := client.Explain(v.ctx, v.b, st.ID, v.a.objectLimit())
	if err != nil || p.Waiting < v.a.explainAfter {
		return
	}
	fmt.Fprintln(v.w, "pending: "+p.String())
}

func (v *progressView) showBar(l *requests.Lease) {
	p := l.Progress
	if v.bar == nil || p.Pass != v.pass {
		v.finishBar(false)
		v.max, v.pass = p.TotalBytes, p.Pass
		v.bar = progressbar.NewOptions64(p.TotalBytes,
			progressbar.OptionSetWriter(v.w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionUseIECUnits(true),
		)
	}
	if p.TotalBytes != v.max {
		v.max = p.TotalBytes
		v.bar.ChangeMax64(p.TotalBytes)
	}
	v.bar.Describe(barDescription(l))
	_ = v.bar.Set64(min(p.Bytes, p.TotalBytes))
	v.last = ""
}

// finishBar ends the bar's line, filled when the run succeeded.
func (v *progressView) finishBar(full bool) {
	if v.bar == nil {
		return
	}
	if full {
		v.bar.Describe("done")
		_ = v.bar.Set64(v.max)
	}
	_ = v.bar.Exit()
	fmt.Fprintln(v.w)
	v.bar = nil
}

func (v *progressView) close() { v.finishBar(false) }

// barDescription is what follows the bar: phase, artifact, bytes, rate,
// time left.
func barDescription(l *requests.Lease) string {
	p := l.Progress
	parts := []string{phaseOf(p)}
	size := humanBytes(p.Bytes) + " of " + humanBytes(p.TotalBytes)
	if p.Estimated {
		size += " (estimated)"
	}
	parts = append(parts, size)
	parts = append(parts, rateAndETA(p)...)
	return strings.Join(parts, ", ")
}

func phaseOf(p *requests.Progress) string {
	s := p.Phase
	if p.Artifact != "" {
		s += " " + p.Artifact
	}
	if p.Pass > 1 {
		s += fmt.Sprintf(" (pass %d)", p.Pass)
	}
	return s
}

func rateAndETA(p *requests.Progress) []string {
	var out []string
	if r := p.Rate(); r > 0 {
		out = append(out, humanBytes(int64(r))+"/s")
	}
	if eta, ok := p.ETA(); ok {
		out = append(out, "ETA "+humanDuration(eta))
	}
	return out
}

// progressLine says where a request stands in one line, for logs and
// for status: a percentage, the rate and the time left where the total
// is known.
func progressLine(st *client.Status) string {
	switch {
	case st.Result != nil:
		return fmt.Sprintf("%s after %d attempt(s)", st.Status, st.Result.Attempts)
	case st.Lease != nil:
		l := st.Lease
		line := fmt.Sprintf("running: attempt %d on %s", l.Attempt, l.Holder)
		if p := l.Progress; p != nil {
			line += ": " + phaseOf(p)
			if pct, ok := p.Percent(); ok {
				est := ""
				if p.Estimated {
					est = " estimated"
				}
				line += fmt.Sprintf(", %.0f%% (%s of %s%s)", pct, humanBytes(p.Bytes), humanBytes(p.TotalBytes), est)
			} else {
				line += fmt.Sprintf(", %s read", humanBytes(p.Bytes))
			}
			line += fmt.Sprintf(", %s stored", humanBytes(p.StoredBytes))
			if p.Total > 0 {
				line += fmt.Sprintf(", %d/%d", p.Done, p.Total)
			} else if p.Done > 0 {
				line += fmt.Sprintf(", %d items", p.Done)
			}
			if more := rateAndETA(p); len(more) > 0 {
				line += ", " + strings.Join(more, ", ")
			}
		}
		return line
	}
	return "pending: waiting for a worker"
}
