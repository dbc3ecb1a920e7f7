package scanner_test

import (
	"time"

	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/scanner"
)

// bucketSources are the sources the executor of bucket key uses, as
// "capsule worker --scan" wires them.
func bucketSources(sc *scanner.Scanner, key string) executor.Sources { return sc.Sources(key) }

// secretRefresh sets how often the scanner reads the Secrets again.
func secretRefresh(cfg *scanner.Config, d time.Duration) { cfg.SecretRefresh = d }
