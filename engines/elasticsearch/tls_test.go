package elasticsearch

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// TestTLSSetting: the shared tls setting checks the stand-in's
// certificate (httptest's, for example.com and 127.0.0.1) against
// tls.caFile for the url's host or tls.serverName; a wrong name or a
// wrong CA fails.
func TestTLSSetting(t *testing.T) {
	std := newStandIn(t, "elasticsearch", "8.11.0", true)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	must(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: std.srv.Certificate().Raw}), 0o600))
	svc := &esService{url: std.srv.URL, caFile: caFile, std: std, prefixes: map[string]string{}}
	ctx := context.Background()
	svc.Seed(ctx, t)
	with := func(tlsSetting map[string]any) engines.Source {
		src := svc.Source(t)
		delete(src.Config, "caFile") // the older spelling, which the seeding client uses
		src.Config["tls"] = tlsSetting
		return src
	}
	enginetest.Backup(ctx, t, newTestEngine(), with(map[string]any{"caFile": caFile}))
	enginetest.Backup(ctx, t, newTestEngine(), with(map[string]any{"caFile": caFile, "serverName": "example.com"}))
	for name, bad := range map[string]map[string]any{
		"wrong name": {"caFile": caFile, "serverName": "es.elsewhere.example"},
		"wrong CA":   {"caFile": enginetest.NewPKI(t).CA},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newTestEngine().Backup(ctx, &engines.BackupJob{ID: "x", Source: with(bad), Artifacts: enginetest.NewStore(), Log: enginetest.TestLog(t)})
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("backup: %v, want a certificate error", err)
			}
		})
	}
	t.Run("settings", func(t *testing.T) {
		for _, c := range []struct {
			cfg  map[string]any
			want string
		}{
			{map[string]any{"url": "http://h:9200", "indices": []any{"a"}, "tls": map[string]any{"insecureSkipVerify": true}}, "not https"},
			{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "caFile": caFile, "tls": map[string]any{"caFile": caFile}}, "not both"},
			{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "tls": map[string]any{"certFile": "/c.pem"}}, "set both"},
		} {
			if err := newTestEngine().Validate(engines.Source{Name: "s", Engine: Name, Config: c.cfg}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: %v, want %q", c.cfg, err, c.want)
			}
		}
	})
}
