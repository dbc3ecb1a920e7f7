package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

// TestCredentialsInRequestsAreRedacted has clients put credentials in
// request fields (a source or target that is a connection string with a
// password, secret-looking label and option keys and values) and looks
// for them in every object of the bucket after the work, results and
// backup indexes included, and in the worker's log. It also leaves a
// private directory with an option file as a killed worker would, and
// checks the worker sweeps it at start.
func TestCredentialsInRequestsAreRedacted(t *testing.T) {
	const secret = "secretpw"
	c := newCluster(t, 64<<10)
	tmp := t.TempDir()
	c.env = append(c.env, "TMPDIR="+tmp)
	stale := filepath.Join(tmp, fmt.Sprintf("capsule-%d", os.Getuid()), "run-999999-0123456789ab")
	mustDo(t, os.MkdirAll(stale, 0o700))
	mustDo(t, os.WriteFile(filepath.Join(stale, ".lock"), nil, 0o600))
	mustDo(t, os.WriteFile(filepath.Join(stale, "client.cnf"), []byte("[client]\npassword=\""+secret+"\"\n"), 0o600))

	w := c.startWorker("w1")
	ctx := context.Background()
	bad := map[string]string{
		"secret-source":     `{"apiVersion":"capsule/v1","kind":"Backup","id":"secret-source","source":"postgres://user:` + secret + `@db/x","labels":{"password":"` + secret + `"}}`,
		"secret-target":     `{"apiVersion":"capsule/v1","kind":"Restore","id":"secret-target","backupId":"b1","target":"mysql://root:` + secret + `@db:3306/app","options":{"token":"` + secret + `"}}`,
		"secret-label-key":  `{"apiVersion":"capsule/v1","kind":"Backup","id":"secret-label-key","source":"data","labels":{"token=` + secret + `":"x"}}`,
		"secret-option-key": `{"apiVersion":"capsule/v1","kind":"Restore","id":"secret-option-key","backupId":"b1","options":{"password=` + secret + `":"x"}}`,
	}
	var ids []string
	for id, body := range bad {
		if _, err := bucket.PutBytes(ctx, c.b, requests.RequestKey(id), []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Good requests whose labels and options carry secrets: the backup
	// runs, the restore is rejected for options its engine does not take.
	backup := &requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "data",
		Labels: map[string]string{"password": secret, "note": "token=" + secret, "team": "ml"}}
	mustDo(t, client.Submit(ctx, c.b, backup))
	results := c.waitResults(append(ids, backup.ID), time.Minute)
	restore := &requests.Request{Kind: requests.KindRestore, Cluster: "e2e", BackupID: backup.ID, Target: "copy",
		Options: map[string]string{"token": secret, "note": "password=" + secret}}
	mustDo(t, client.Submit(ctx, c.b, restore))
	for id, r := range c.waitResults([]string{restore.ID}, time.Minute) {
		results[id] = r
	}

	for _, id := range ids {
		r := results[id]
		if r.Status != requests.StatusRejected || r.Error == "" {
			t.Errorf("%s: %s %q, want rejected with a message", id, r.Status, r.Error)
		}
		if strings.Contains(r.Error, secret) {
			t.Errorf("%s: the result's message holds the secret: %q", id, r.Error)
		}
		if !strings.Contains(r.Error, "REDACTED") {
			t.Errorf("%s: the message %q shows no redaction: the check proves nothing", id, r.Error)
		}
	}
	if results[backup.ID].Status != requests.StatusSucceeded {
		t.Errorf("%s: %s %q", backup.ID, results[backup.ID].Status, results[backup.ID].Error)
	}
	// The files engine takes no option "token" or "note": the worker
	// rejects the restore, naming the option, never its value.
	if r := results[restore.ID]; r.Status != requests.StatusRejected || !strings.Contains(r.Error, "has no restore option") || strings.Contains(r.Error, secret) {
		t.Errorf("%s: %s %q, want rejected for its unknown options, without the secret", restore.ID, r.Status, r.Error)
	}

	c.stopAll()
	logData, err := os.ReadFile(w.log)
	mustDo(t, err)
	if bytes.Contains(logData, []byte(secret)) {
		for _, line := range bytes.Split(logData, []byte("\n")) {
			if bytes.Contains(line, []byte(secret)) {
				t.Errorf("the worker's log holds the secret: %s", line)
			}
		}
	}
	for _, want := range []string{"rejecting malformed request", "request finished", "REDACTED", "removed a tools' private directory"} {
		if !bytes.Contains(logData, []byte(want)) {
			t.Errorf("the worker's log lacks %q: the check proves nothing", want)
		}
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the killed worker's private directory was not swept: %v", err)
	}

	objects := 0
	mustDo(t, bucket.Walk(ctx, c.b, "", func(o bucket.ObjectInfo) error {
		data, _, err := bucket.GetBytes(ctx, c.b, o.Key)
		if err != nil {
			return err
		}
		objects++
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("object %s holds the secret: %s", o.Key, data)
		}
		return nil
	}))
	if objects < len(ids)+3 {
		t.Errorf("only %d objects in the bucket: the check proves nothing", objects)
	}
}
