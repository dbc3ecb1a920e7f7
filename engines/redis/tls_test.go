package redis

import (
	"context"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// TestTLSSetting backs up over rediss:// to a server that demands a
// client certificate, with the shared tls setting; a wrong CA, a wrong
// server name and a missing client certificate fail.
func TestTLSSetting(t *testing.T) {
	ctx := context.Background()
	ca, cert, key := writeTestCerts(t, t.TempDir())
	otherCA, _, _ := writeTestCerts(t, t.TempDir())
	srv := startServer(t, "tls-port 0", "tls-cert-file "+cert, "tls-key-file "+key, "tls-ca-cert-file "+ca, "tls-auth-clients yes")
	source := func(tlsSetting map[string]any) engines.Source {
		return engines.Source{Name: "test/redis", Engine: "redis",
			Config:   map[string]any{"url": srv.url(""), "tls": tlsSetting},
			Password: func(context.Context) (string, error) { return srv.password, nil }}
	}
	seed(ctx, t, srv)
	// The test certificate serves as the client's too.
	good := map[string]any{"caFile": ca, "certFile": cert, "keyFile": key}
	if _, info := enginetest.Backup(ctx, t, New(), source(good)); info.SourceInfo["tls"] != "true" {
		t.Errorf("source info says tls=%s", info.SourceInfo["tls"])
	}
	named := map[string]any{"caFile": ca, "certFile": cert, "keyFile": key, "serverName": "127.0.0.1"}
	enginetest.Backup(ctx, t, New(), source(named))
	for name, c := range map[string]struct {
		tls  map[string]any
		want string
	}{
		"wrong CA":       {map[string]any{"caFile": otherCA, "certFile": cert, "keyFile": key}, "certificate"},
		"wrong name":     {map[string]any{"caFile": ca, "certFile": cert, "keyFile": key, "serverName": "redis.elsewhere.example"}, "certificate"},
		"no client cert": {map[string]any{"caFile": ca}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New().Backup(ctx, &engines.BackupJob{ID: "bad", Source: source(c.tls), Artifacts: enginetest.NewStore()})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("backup: %v, want an error with %q", err, c.want)
			}
		})
	}
	t.Run("settings", func(t *testing.T) {
		for _, c := range []struct {
			cfg  map[string]any
			want string
		}{
			{map[string]any{"url": "redis://h", "tls": map[string]any{"caFile": "/ca.pem"}}, "rediss://"},
			{map[string]any{"url": "rediss://h", "caFile": "/ca.pem", "tls": map[string]any{"caFile": "/ca.pem"}}, "not both"},
			{map[string]any{"url": "rediss://h", "tls": map[string]any{"keyFile": "/k.pem"}}, "set both"},
		} {
			if err := New().Validate(engines.Source{Name: "s", Engine: "redis", Config: c.cfg}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: %v, want %q", c.cfg, err, c.want)
			}
		}
	})
}
