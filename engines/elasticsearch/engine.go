package elasticsearch

import (
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// Name is the engine's registry name.
const Name = "elasticsearch"

// Engine backs up and restores Elasticsearch 7.x/8.x and OpenSearch
// 1.x/2.x clusters. It is stateless and safe for concurrent use.
type Engine struct {
	// bulkBackoff is the first pause before a 429 is retried (default
	// 200ms), doubling each time; pollInterval is how often a snapshot's
	// state is polled (default 2s). Tests shorten them.
	bulkBackoff  time.Duration
	pollInterval time.Duration
}

var _ engines.Engine = (*Engine)(nil)

// New returns the engine.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (e *Engine) Name() string { return Name }

// Validate implements engines.Engine.
func (e *Engine) Validate(src engines.Source) error {
	_, err := decodeConfig(src)
	return err
}

func logOf(l logrus.FieldLogger) logrus.FieldLogger {
	if l == nil {
		return engines.DiscardLog()
	}
	return l
}

func (e *Engine) retryBase() time.Duration {
	if e.bulkBackoff > 0 {
		return e.bulkBackoff
	}
	return 200 * time.Millisecond
}

func (e *Engine) poll() time.Duration {
	if e.pollInterval > 0 {
		return e.pollInterval
	}
	return 2 * time.Second
}
