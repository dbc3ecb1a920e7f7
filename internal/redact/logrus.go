package redact

import "github.com/sirupsen/logrus"

// Formatter wraps a logrus formatter: every entry's message and fields
// are redacted (String, Field) before Next formats them. It sits where
// every line of a logger passes, whatever code logged it, so it is the
// one place a worker's log is kept clean.
type Formatter struct {
	Next logrus.Formatter
}

var _ logrus.Formatter = (*Formatter)(nil)

// Format implements logrus.Formatter.
func (f *Formatter) Format(e *logrus.Entry) ([]byte, error) {
	c := *e // the entry's own fields stay as the caller made them
	c.Message = String(e.Message)
	c.Data = make(logrus.Fields, len(e.Data))
	for k, v := range e.Data {
		c.Data[k] = Field(k, v)
	}
	return f.Next.Format(&c)
}

// Logger makes l redact every line it writes: it wraps l's formatter.
// Call it after the formatter is chosen.
func Logger(l *logrus.Logger) {
	if _, ok := l.Formatter.(*Formatter); ok {
		return
	}
	l.SetFormatter(&Formatter{Next: l.Formatter})
}
