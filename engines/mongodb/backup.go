package mongodb

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	cfg, err := decodeConfig(job.Source)
	if err != nil {
		return nil, err
	}
	cl, err := connect(ctx, job.Source, cfg)
	if err != nil {
		return nil, err
	}
	defer disconnect(ctx, cl)
	ver, err := serverVersion(ctx, cl)
	if err != nil {
		return nil, err
	}
	log := logOf(job.Log).WithFields(logrus.Fields{"engine": Name, "source": job.Source.Name, "server": ver})
	dbs, err := databases(ctx, cl, cfg)
	if err != nil {
		return nil, err
	}
	if len(dbs) == 0 {
		return nil, fmt.Errorf("databases: none to back up on the server")
	}
	b := &backuper{cl: cl, log: log, progress: job.Progress, server: ver}
	namer := artifactNamer{}
	perDB := map[string]any{}
	for _, db := range dbs {
		counts, err := b.database(ctx, job.Artifacts, namer.name(db), db)
		if err != nil {
			return nil, err
		}
		perDB[db] = counts
	}
	log.WithFields(logrus.Fields{"databases": len(dbs), "documents": b.done}).Info("mongodb backup done")
	return &engines.BackupInfo{
		Format:        FormatV1,
		ServerVersion: ver,
		SourceInfo:    map[string]string{"host": hostOf(cfg.URL), "databases": strings.Join(dbs, ",")},
		Details:       map[string]any{"documents": b.done, "perDatabase": perDB},
	}, nil
}

type backuper struct {
	cl       *mongo.Client
	log      logrus.FieldLogger
	progress engines.Progress
	server   string
	done     int64
}

// collections lists a database's collections and views: collections
// first, then views, each sorted by name; system collections left out.
func collections(ctx context.Context, db *mongo.Database) ([]collHeader, error) {
	cur, err := db.ListCollections(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("database %s: listCollections: %w", db.Name(), err)
	}
	defer cur.Close(ctx)
	var out []collHeader
	for cur.Next(ctx) {
		var spec struct {
			Name    string   `bson:"name"`
			Type    string   `bson:"type"`
			Options bson.Raw `bson:"options"`
		}
		if err := cur.Decode(&spec); err != nil {
			return nil, fmt.Errorf("database %s: listCollections: %w", db.Name(), err)
		}
		if strings.HasPrefix(spec.Name, "system.") {
			continue
		}
		if spec.Type == "" {
			spec.Type = "collection"
		}
		out = append(out, collHeader{Name: spec.Name, Type: spec.Type, Options: spec.Options})
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("database %s: listCollections: %w", db.Name(), err)
	}
	sort.Slice(out, func(i, j int) bool {
		vi, vj := out[i].Type == "view", out[j].Type == "view"
		if vi != vj {
			return vj
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// indexes lists a collection's indexes without their legacy ns field.
func indexes(ctx context.Context, coll *mongo.Collection) ([]bson.Raw, error) {
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("collection %s: listIndexes: %w", coll.Name(), err)
	}
	defer cur.Close(ctx)
	var out []bson.Raw
	for cur.Next(ctx) {
		spec, err := without(cur.Current, "ns")
		if err != nil {
			return nil, err
		}
		out = append(out, spec)
	}
	return out, cur.Err()
}

// without copies doc without the named top-level fields, in order.
func without(doc bson.Raw, drop ...string) (bson.Raw, error) {
	elems, err := doc.Elements()
	if err != nil {
		return nil, err
	}
	out := bson.D{}
	for _, el := range elems {
		skip := false
		for _, d := range drop {
			skip = skip || el.Key() == d
		}
		if !skip {
			out = append(out, bson.E{Key: el.Key(), Value: el.Value()})
		}
	}
	return bson.Marshal(out)
}

// database writes one database as one artifact.
func (b *backuper) database(ctx context.Context, aw engines.ArtifactWriter, artifact, name string) (map[string]int64, error) {
	db := b.cl.Database(name)
	colls, err := collections(ctx, db)
	if err != nil {
		return nil, err
	}
	w, err := aw.Create(artifact)
	if err != nil {
		return nil, err
	}
	fw := &frameWriter{w: bufio.NewWriterSize(w, 256<<10)}
	if err := fw.writeDoc(kindHeader, header{Format: FormatV1, Database: name, Server: b.server}); err != nil {
		return nil, err
	}
	start := time.Now()
	counts := map[string]int64{}
	var total int64
	for _, c := range colls {
		coll := db.Collection(c.Name)
		if c.Type != "view" {
			if c.Indexes, err = indexes(ctx, coll); err != nil {
				return nil, fmt.Errorf("database %s: %w", name, err)
			}
		}
		if err := fw.writeDoc(kindCollection, c); err != nil {
			return nil, err
		}
		var n int64
		if c.Type != "view" {
			n, err = b.documents(ctx, fw, coll)
			if err != nil {
				return nil, fmt.Errorf("database %s: collection %s: %w", name, c.Name, err)
			}
			counts[c.Name] = n
			total += n
		}
		if err := fw.writeDoc(kindEnd, collEnd{Count: n}); err != nil {
			return nil, err
		}
	}
	if err := fw.writeDoc(kindDBEnd, dbEnd{Collections: int64(len(colls)), Documents: total}); err != nil {
		return nil, err
	}
	if err := fw.w.Flush(); err != nil {
		return nil, fmt.Errorf("%s: %w", artifact, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", artifact, err)
	}
	b.log.WithFields(logrus.Fields{"database": name, "collections": len(colls), "documents": total, "artifact": artifact, "seconds": time.Since(start).Seconds()}).Info("database backed up")
	return counts, nil
}

func (b *backuper) documents(ctx context.Context, fw *frameWriter, coll *mongo.Collection) (int64, error) {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return 0, err
	}
	defer cur.Close(ctx)
	var n int64
	for cur.Next(ctx) {
		if err := fw.write(kindDocument, cur.Current); err != nil {
			return n, err
		}
		n++
		b.done++
		if b.done%1000 == 0 {
			b.progress.Report("documents", b.done, 0)
		}
	}
	return n, cur.Err()
}
