package mongodb

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"go.mongodb.org/mongo-driver/bson"
)

// TestTLS backs up and restores through a FerretDB that listens with TLS
// only and demands a client certificate (the stand-in: no MongoDB runs
// here), with the tls setting; a wrong CA, a wrong server name and a
// missing client certificate fail.
func TestTLS(t *testing.T) {
	p := enginetest.NewPKI(t)
	uri, stop, err := startFerretDB(ferretBinary(t), "-tls-addr", "127.0.0.1:0",
		"-tls-cert", p.ServerCert, "-tls-key", p.ServerKey, "-tls-ca", p.CA)
	if err != nil {
		t.Fatalf("start FerretDB with TLS: %v", err)
	}
	t.Cleanup(stop)
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	// The tls setting, not the url, turns TLS on.
	u.User, u.RawQuery = url.User("capsule"), "authMechanism=PLAIN&authSource=admin"
	db := "ct_tls_" + randHex(4)
	source := func(tlsSetting map[string]any) engines.Source {
		return engines.Source{Name: "test/mongo", Engine: Name,
			Config:   map[string]any{"url": u.String(), "databases": []any{db}, "tls": tlsSetting},
			Password: func(context.Context) (string, error) { return "pw", nil }}
	}
	good := map[string]any{"caFile": p.CA, "certFile": p.ClientCert, "keyFile": p.ClientKey}

	bg := context.Background()
	cl, err := connect(bg, source(good), mustConfig(t, source(good)))
	if err != nil {
		t.Fatalf("connect over TLS: %v", err)
	}
	coll := cl.Database(db).Collection("c")
	if _, err := coll.InsertMany(bg, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}}); err != nil {
		t.Fatalf("seed over TLS: %v", err)
	}
	store, info := enginetest.Backup(bg, t, New(), source(good))
	if _, err := coll.DeleteMany(bg, bson.D{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New().Restore(bg, store.RestoreJob(t, "tls", source(good), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("restore over TLS: %v", err)
	}
	if n, err := coll.CountDocuments(bg, bson.D{}); err != nil || n != 2 {
		t.Errorf("after the restore: %d documents, %v", n, err)
	}
	disconnect(bg, cl)

	for name, c := range map[string]struct {
		tls  map[string]any
		want string
	}{
		"wrong CA":       {map[string]any{"caFile": p.OtherCA, "certFile": p.ClientCert, "keyFile": p.ClientKey}, "certificate"},
		"wrong name":     {map[string]any{"caFile": p.CA, "certFile": p.ClientCert, "keyFile": p.ClientKey, "serverName": "mongo.elsewhere.example"}, "certificate"},
		"no client cert": {map[string]any{"caFile": p.CA}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(bg, 5*time.Second) // the driver retries a failed handshake until then
			defer ccancel()
			_, err := New().Backup(cctx, &engines.BackupJob{ID: "bad", Source: source(c.tls), Artifacts: enginetest.NewStore()})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("backup: %v, want an error with %q", err, c.want)
			}
		})
	}
	t.Run("settings", func(t *testing.T) {
		src := source(map[string]any{"caFile": p.CA})
		src.Config["url"] = "mongodb://u@h:27017/?tls=true"
		if err := New().Validate(src); err == nil || !strings.Contains(err.Error(), "one place") {
			t.Errorf("tls in the url and the setting: %v", err)
		}
	})
}

func mustConfig(t *testing.T, src engines.Source) *Config {
	t.Helper()
	cfg, err := decodeConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
