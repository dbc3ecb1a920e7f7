package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// format is the -o of every command, with one meaning everywhere, as in
// kubectl and velero: a table for people, a wider table with more
// columns, or the same data as JSON or YAML for scripts.
type format string

const (
	formatTable format = "table"
	formatWide  format = "wide"
	formatJSON  format = "json"
	formatYAML  format = "yaml"
)

const formatHelp = "output format: table, wide, json or yaml"

// outputFlag adds -o/--output to cmd.
func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", string(formatTable), formatHelp)
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
}

// parseFormat checks an -o value; "text", the old name of the table, is
// still taken. A bad value is a usage error.
func parseFormat(o string) (format, error) {
	switch format(o) {
	case formatTable, formatWide, formatJSON, formatYAML:
		return format(o), nil
	case "text":
		return formatTable, nil
	}
	return "", usageErr(fmt.Errorf("--output %q: want table, wide, json or yaml", o))
}

// data reports whether f prints data (JSON or YAML) rather than a table.
func (f format) data() bool { return f == formatJSON || f == formatYAML }

// writeData prints v as JSON or YAML. YAML goes through JSON, so both
// have the same field names.
func writeData(w io.Writer, f format, v any) error {
	if f == formatYAML {
		out, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	return writeJSON(w, v)
}

// writeLine prints v as one line of JSON, or as one YAML document, for
// streams such as tail.
func writeLine(w io.Writer, f format, v any) error {
	if f == formatYAML {
		out, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "---\n%s", out)
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// column is one column of a table: wide columns appear with -o wide only.
type column[T any] struct {
	head string
	wide bool
	cell func(T) string
}

// printTable prints rows as a kubectl-style table (no borders, left
// aligned, two spaces between columns), with the wide columns when f is
// formatWide.
func printTable[T any](w io.Writer, f format, rows []T, cols []column[T]) error {
	var use []column[T]
	for _, c := range cols {
		if !c.wide || f == formatWide {
			use = append(use, c)
		}
	}
	heads := make([]string, len(use))
	for i, c := range use {
		heads[i] = c.head
	}
	cells := make([][]string, len(rows))
	for r, row := range rows {
		cells[r] = make([]string, len(use))
		for i, c := range use {
			cells[r][i] = oneLine(c.cell(row))
		}
	}
	return renderTable(w, heads, cells)
}

// renderTable prints a header and rows through tablewriter, trimming
// the padding at the end of each line.
func renderTable(w io.Writer, heads []string, rows [][]string) error {
	var buf bytes.Buffer
	cell := tw.CellConfig{
		Formatting: tw.CellFormatting{AutoFormat: tw.Off, AutoWrap: tw.WrapNone},
		Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
		Padding:    tw.CellPadding{Global: tw.Padding{Left: "", Right: "  ", Overwrite: true}},
	}
	t := tablewriter.NewTable(&buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{
				Separators: tw.Separators{BetweenColumns: tw.Off, BetweenRows: tw.Off},
				Lines:      tw.Lines{ShowHeaderLine: tw.Off},
			},
		})),
		tablewriter.WithConfig(tablewriter.Config{Header: cell, Row: cell}),
		tablewriter.WithTrimSpace(tw.Off),
	)
	t.Header(heads)
	if err := t.Bulk(rows); err != nil {
		return err
	}
	if err := t.Render(); err != nil {
		return err
	}
	for line := range strings.Lines(buf.String()) {
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	return nil
}

// printFields prints name/value pairs, one a line, aligned: describe's
// and status's human form. Empty values are left out.
func printFields(w io.Writer, fields [][2]string) error {
	var rows [][]string
	for _, f := range fields {
		if f[1] != "" {
			rows = append(rows, []string{f[0] + ":", oneLine(f[1])})
		}
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "%-*s  %s\n", width, r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}

// oneLine folds a value onto one line: an error quoted from a tool may
// span several, and a table row or a tail line must not.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if !strings.Contains(s, "  ") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// when formats a time for people: UTC with its "Z" by default, the local
// time with its offset under --local. Both are RFC 3339. The zero time
// is "-".
func (a *app) when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if a.local {
		return t.Local().Format(time.RFC3339)
	}
	return t.UTC().Format(time.RFC3339)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// humanDuration rounds d for people: 1h02m, 3m05s, 12s, 850ms.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
