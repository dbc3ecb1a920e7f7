package mongodb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

const insertMaxBytes = 8 << 20

// Restore implements engines.Engine.
//
// Every collection is loaded into a side collection of its database
// (capsule_tmp_<restore id>_a<attempt>_<n>) with its options and indexes; only when
// every artifact was read to its end and checked are the side collections
// renamed into place and the views recreated. On error or cancellation
// before that, the side collections are dropped and the target is as it
// was.
func (e *Engine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	if job.Backup.Format != FormatV1 {
		return nil, fmt.Errorf("backup format %q is not %s", job.Backup.Format, FormatV1)
	}
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	if len(job.Options.Extra) > 0 {
		for k := range job.Options.Extra {
			return nil, fmt.Errorf("unknown restore option %q (this engine has none)", k)
		}
	}
	cl, err := connect(ctx, job.Target, cfg)
	if err != nil {
		return nil, err
	}
	defer disconnect(ctx, cl)
	ver, err := serverVersion(ctx, cl)
	if err != nil {
		return nil, err
	}
	r := &restorer{
		cl: cl, cfg: cfg, job: job, tag: restoreTag(job.ID), later: map[string]bool{},
		log: logOf(job.Log).WithFields(logrus.Fields{"engine": Name, "target": job.Target.Name, "server": ver}),
	}
	if total, ok := job.Backup.Details["documents"].(float64); ok {
		r.total = int64(total)
	}
	return r.run(ctx)
}

var unsafeTagChars = regexp.MustCompile(`[^a-z0-9]+`)

func restoreTag(id string) string {
	t := unsafeTagChars.ReplaceAllString(strings.ToLower(id), "")
	if len(t) > 32 {
		t = t[len(t)-32:]
	}
	if t == "" {
		t = fmt.Sprint(time.Now().UnixNano())
	}
	return t
}

type staged struct {
	db, name, side string
}

type view struct {
	db, name string
	options  bson.Raw
}

type restorer struct {
	// secondPass: the artifacts holding time-series collections are read
	// again, after the swap, to replace those in place.
	secondPass bool
	later      map[string]bool // artifacts with time-series collections
	laterCount int
	cl         *mongo.Client
	cfg        *Config
	job        *engines.RestoreJob
	log        logrus.FieldLogger
	tag        string
	staged     []staged
	views      []view
	done       int64
	total      int64
}

func (r *restorer) run(ctx context.Context) (info *engines.RestoreInfo, err error) {
	names := r.job.Artifacts.Names()
	if len(names) == 0 {
		return nil, errors.New("backup has no artifact")
	}
	// Nothing is created on the server before every artifact is known
	// good; staging reads them again, checked again, as it loads.
	for _, a := range names {
		if err := r.job.Artifacts.Verify(ctx, a); err != nil {
			return nil, err
		}
	}
	r.log.WithField("artifacts", len(names)).Info("every artifact verified")
	swapped := 0
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, s := range r.staged[swapped:] {
			if derr := r.cl.Database(s.db).Collection(s.side).Drop(cctx); derr != nil {
				r.log.WithFields(logrus.Fields{"database": s.db, "collection": s.side, "error": derr}).Error("could not drop a side collection")
			}
		}
		if len(r.staged) > swapped {
			r.log.WithField("side_collections", len(r.staged)-swapped).Info("side collections dropped")
		}
	}()
	dbs := map[string]bool{}
	for _, a := range names {
		db, err := r.artifact(ctx, a)
		if err != nil {
			return nil, err
		}
		if dbs[db] {
			return nil, fmt.Errorf("artifact %s: database %s restored twice", a, db)
		}
		dbs[db] = true
	}
	r.log.WithFields(logrus.Fields{"collections": len(r.staged), "views": len(r.views), "documents": r.done}).Info("every collection staged and every artifact verified: swapping")
	// Only the holder of the lease may swap: confirm it now, the last
	// thing before the first rename.
	if err := r.job.CheckFence(ctx); err != nil {
		r.log.WithError(err).Warn("not swapping: this attempt no longer holds the request")
		return nil, err
	}
	start := time.Now()
	var previous []string
	for i, s := range r.staged {
		prev, err := r.swap(ctx, s, i)
		if err != nil {
			return nil, fmt.Errorf("swap %s.%s (%d of %d collections swapped): %w", s.db, s.name, swapped, len(r.staged), err)
		}
		swapped++
		if prev != "" {
			previous = append(previous, prev)
		}
	}
	for i, v := range r.views {
		prev, err := r.createView(ctx, v, i)
		if err != nil {
			return nil, err
		}
		if prev != "" {
			previous = append(previous, prev)
		}
	}
	if r.laterCount > 0 {
		r.secondPass = true
		for _, a := range names {
			if !r.later[a] {
				continue
			}
			if _, err := r.artifact(ctx, a); err != nil {
				return nil, fmt.Errorf("time-series collections, replaced in place after the swap: %w", err)
			}
		}
	}
	downtime := time.Since(start)
	r.log.WithFields(logrus.Fields{"collections": len(r.staged), "views": len(r.views), "time_series": r.laterCount, "downtime_ms": downtime.Milliseconds()}).Info("mongodb restore done")
	return &engines.RestoreInfo{
		Downtime: downtime,
		Previous: strings.Join(previous, ","),
		Details:  map[string]any{"documents": r.done, "collections": len(r.staged), "views": len(r.views), "timeSeries": r.laterCount},
	}, nil
}

// artifact stages one database's collections and reads the artifact to
// its end.
func (r *restorer) artifact(ctx context.Context, art string) (db string, err error) {
	rc, err := r.job.Artifacts.Open(ctx, art)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 256<<10)
	defer func() {
		if err != nil {
			err = drain(br, err)
		}
	}()
	fr := &frameReader{r: br, art: art}
	kind, doc, err := fr.next()
	if err != nil {
		return "", fmt.Errorf("%s: header: %w", art, err)
	}
	var h header
	if kind != kindHeader || bson.Unmarshal(doc, &h) != nil || h.Format != FormatV1 || h.Database == "" {
		return "", fmt.Errorf("%s: does not start with a %s header", art, FormatV1)
	}
	database := r.cl.Database(h.Database)
	if !r.secondPass {
		if err := r.sweep(ctx, database); err != nil {
			return "", err
		}
	}
	var colls, docs int64
	for {
		kind, doc, err := fr.next()
		if err == io.EOF {
			return "", fmt.Errorf("%s: ends before its last record", art)
		}
		if err != nil {
			return "", err
		}
		switch kind {
		case kindCollection:
			var c collHeader
			if err := bson.Unmarshal(doc, &c); err != nil {
				return "", fmt.Errorf("%s: collection header: %w", art, err)
			}
			n, err := r.collection(ctx, fr, database, c)
			if err != nil {
				return "", fmt.Errorf("%s: collection %s: %w", art, c.Name, err)
			}
			colls++
			docs += n
		case kindDBEnd:
			var end dbEnd
			if err := bson.Unmarshal(doc, &end); err != nil {
				return "", fmt.Errorf("%s: trailer: %w", art, err)
			}
			if end.Collections != colls || end.Documents != docs {
				return "", fmt.Errorf("%s: %d collections and %d documents, its trailer says %d and %d", art, colls, docs, end.Collections, end.Documents)
			}
			// The end of the artifact is where its checksum is checked.
			if _, _, err := fr.next(); err != io.EOF {
				if err == nil {
					err = errors.New("data after its trailer")
				}
				return "", fmt.Errorf("%s: %w", art, err)
			}
			r.log.WithFields(logrus.Fields{"database": h.Database, "collections": colls, "documents": docs}).Info("database staged")
			return h.Database, nil
		default:
			return "", fmt.Errorf("%s: unexpected record %q", art, kind)
		}
	}
}

// collection stages one collection (or records one view) and reads its
// records up to its end record.
func (r *restorer) collection(ctx context.Context, fr *frameReader, db *mongo.Database, c collHeader) (int64, error) {
	var coll *mongo.Collection
	switch c.Type {
	case "view":
		if !r.secondPass {
			r.views = append(r.views, view{db: db.Name(), name: c.Name, options: c.Options})
		}
	case "timeseries":
		// renameCollection cannot move a time-series collection: it is
		// replaced in place once everything else is swapped (second pass).
		if !r.secondPass {
			r.later[fr.art] = true
			r.laterCount++
			break
		}
		if err := db.Collection(c.Name).Drop(ctx); err != nil {
			return 0, fmt.Errorf("drop time-series collection: %w", err)
		}
		opts, err := createOptions(c.Options)
		if err != nil {
			return 0, err
		}
		if err := db.RunCommand(ctx, append(bson.D{{Key: "create", Value: c.Name}}, opts...)).Err(); err != nil {
			return 0, fmt.Errorf("create time-series collection: %w", err)
		}
		coll = db.Collection(c.Name)
	case "collection":
		if r.secondPass {
			break
		}
		side := fmt.Sprintf("%s%d", r.sidePrefix(r.job.AttemptNumber()), len(r.staged))
		cmd := bson.D{{Key: "create", Value: side}}
		opts, err := createOptions(c.Options)
		if err != nil {
			return 0, err
		}
		cmd = append(cmd, opts...)
		if err := db.RunCommand(ctx, cmd).Err(); err != nil {
			return 0, fmt.Errorf("create side collection %s: %w", side, err)
		}
		r.staged = append(r.staged, staged{db: db.Name(), name: c.Name, side: side})
		coll = db.Collection(side)
	default:
		return 0, fmt.Errorf("type %q is not one this engine restores", c.Type)
	}
	var batch []any
	batchBytes := 0
	var n int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := coll.InsertMany(ctx, batch, options.InsertMany().SetOrdered(true).SetBypassDocumentValidation(true))
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		r.done += int64(len(batch))
		r.job.Progress.Report("documents", r.done, r.total)
		batch, batchBytes = batch[:0], 0
		return nil
	}
	for {
		kind, doc, err := fr.next()
		if err == io.EOF {
			return 0, errors.New("ends inside the collection")
		}
		if err != nil {
			return 0, err
		}
		switch kind {
		case kindDocument:
			if c.Type == "view" {
				return 0, errors.New("a view with documents")
			}
			n++
			if coll == nil { // loaded in the other pass
				continue
			}
			batch = append(batch, doc)
			batchBytes += len(doc)
			if len(batch) >= r.cfg.BatchSize || batchBytes >= insertMaxBytes {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		case kindEnd:
			if err := flush(); err != nil {
				return 0, err
			}
			var end collEnd
			if err := bson.Unmarshal(doc, &end); err != nil {
				return 0, err
			}
			if end.Count != n {
				return 0, fmt.Errorf("%d documents, its end record says %d", n, end.Count)
			}
			if coll != nil {
				if err := createIndexes(ctx, db, coll.Name(), c.Indexes); err != nil {
					return 0, err
				}
			}
			return n, nil
		default:
			return 0, fmt.Errorf("unexpected record %q", kind)
		}
	}
}

// createOptions turns listCollections options into create command fields.
func createOptions(opts bson.Raw) (bson.D, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	elems, err := opts.Elements()
	if err != nil {
		return nil, fmt.Errorf("options: %w", err)
	}
	var out bson.D
	for _, el := range elems {
		v := any(el.Value())
		switch el.Key() {
		case "clusteredIndex":
			// listCollections shows the index version; create refuses it.
			if doc, ok := el.Value().DocumentOK(); ok {
				if v, err = without(doc, "v"); err != nil {
					return nil, err
				}
			}
		case "timeseries":
			// Newer servers list the bucketing parameters beside the
			// granularity they follow from; create takes one or the other.
			if doc, ok := el.Value().DocumentOK(); ok {
				if _, err := doc.LookupErr("granularity"); err == nil {
					if v, err = without(doc, "bucketMaxSpanSeconds", "bucketRoundingSeconds"); err != nil {
						return nil, err
					}
				}
			}
		}
		out = append(out, bson.E{Key: el.Key(), Value: v})
	}
	return out, nil
}

// createIndexes recreates a collection's indexes (but _id's) on coll.
func createIndexes(ctx context.Context, db *mongo.Database, coll string, specs []bson.Raw) error {
	var idx bson.A
	for _, s := range specs {
		if name, _ := s.Lookup("name").StringValueOK(); name == "_id_" {
			continue
		}
		if clustered, _ := s.Lookup("clustered").BooleanOK(); clustered {
			continue // made by create's clusteredIndex option
		}
		clean, err := without(s, "ns", "v", "background")
		if err != nil {
			return err
		}
		idx = append(idx, clean)
	}
	if len(idx) == 0 {
		return nil
	}
	if err := db.RunCommand(ctx, bson.D{{Key: "createIndexes", Value: coll}, {Key: "indexes", Value: idx}}).Err(); err != nil {
		return fmt.Errorf("createIndexes: %w", err)
	}
	return nil
}

// exists reports whether db has a collection or view called name, and
// its type.
func exists(ctx context.Context, db *mongo.Database, name string) (string, bool, error) {
	specs, err := db.ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: name}})
	if err != nil {
		return "", false, fmt.Errorf("listCollections: %w", err)
	}
	if len(specs) == 0 {
		return "", false, nil
	}
	return specs[0].Type, true, nil
}

func notImplemented(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 238 || ce.Name == "NotImplemented")
}

func rename(ctx context.Context, cl *mongo.Client, db, from, to string, dropTarget bool) error {
	cmd := bson.D{{Key: "renameCollection", Value: db + "." + from}, {Key: "to", Value: db + "." + to}}
	if dropTarget {
		cmd = append(cmd, bson.E{Key: "dropTarget", Value: true})
	}
	return cl.Database("admin").RunCommand(ctx, cmd).Err()
}

// previousName is where a replaced collection is kept:
// <name>_capsule_prev_<tag>_a<attempt>, or for a long name
// capsule_prev_<tag>_a<attempt>_<n>.
func (r *restorer) previousName(db, name string, i int) string {
	a := strconv.Itoa(r.job.AttemptNumber())
	p := name + "_capsule_prev_" + r.tag + "_a" + a
	if len(db)+1+len(p) > 200 {
		p = fmt.Sprintf("capsule_prev_%s_a%s_%d", r.tag, a, i)
	}
	return p
}

// sidePrefix starts the names of the side collections of an attempt:
// capsule_tmp_<tag>_a<attempt>_<n>.
func (r *restorer) sidePrefix(attempt int) string {
	return "capsule_tmp_" + r.tag + "_a" + strconv.Itoa(attempt) + "_"
}

// sweep drops the side collections that this request's earlier attempts
// left in db: a successor never reuses them, and a paused predecessor
// that wakes finds them gone and fails. Replaced collections kept as
// previous are never touched.
func (r *restorer) sweep(ctx context.Context, db *mongo.Database) error {
	attempt := r.job.AttemptNumber()
	if attempt < 2 {
		return nil
	}
	names, err := db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: bson.D{{Key: "$regex", Value: "^capsule_tmp_" + r.tag + "_a[0-9]+_[0-9]+$"}}}})
	if err != nil {
		return fmt.Errorf("list side collections of database %s: %w", db.Name(), err)
	}
	for _, n := range names {
		rest, _ := strings.CutPrefix(n, "capsule_tmp_"+r.tag+"_a")
		num, _, _ := strings.Cut(rest, "_")
		a, err := strconv.Atoi(num)
		if err != nil || a >= attempt {
			continue
		}
		if err := db.Collection(n).Drop(ctx); err != nil {
			return fmt.Errorf("drop side collection %s.%s of attempt %d: %w", db.Name(), n, a, err)
		}
		r.log.WithFields(logrus.Fields{"database": db.Name(), "collection": n, "staged_by_attempt": a}).Info("dropped a side collection of an earlier attempt")
	}
	return nil
}

// swap renames a side collection into place. The replaced collection is
// dropped (DropPrevious) or kept under its previous name, returned as
// "db.name".
func (r *restorer) swap(ctx context.Context, s staged, i int) (string, error) {
	db := r.cl.Database(s.db)
	_, live, err := exists(ctx, db, s.name)
	if err != nil {
		return "", err
	}
	previous := ""
	if live && !r.job.Options.DropPrevious {
		prev := r.previousName(s.db, s.name, i)
		if err := rename(ctx, r.cl, s.db, s.name, prev, false); err != nil {
			return "", fmt.Errorf("keep the replaced collection as %s: %w", prev, err)
		}
		previous = s.db + "." + prev
		live = false
	}
	err = rename(ctx, r.cl, s.db, s.side, s.name, live)
	if err != nil && live && notImplemented(err) {
		// Servers without dropTarget (FerretDB): drop, then rename. The
		// name is missing between the two.
		if err := db.Collection(s.name).Drop(ctx); err != nil {
			return "", fmt.Errorf("drop the replaced collection: %w", err)
		}
		err = rename(ctx, r.cl, s.db, s.side, s.name, false)
	}
	if err != nil {
		return "", err
	}
	r.log.WithFields(logrus.Fields{"database": s.db, "collection": s.name, "previous": previous}).Debug("collection swapped")
	return previous, nil
}

// createView recreates a view from its definition, replacing whatever has
// its name (a collection is kept unless DropPrevious).
func (r *restorer) createView(ctx context.Context, v view, i int) (string, error) {
	db := r.cl.Database(v.db)
	typ, live, err := exists(ctx, db, v.name)
	if err != nil {
		return "", err
	}
	previous := ""
	switch {
	case live && (typ == "view" || r.job.Options.DropPrevious):
		if err := db.Collection(v.name).Drop(ctx); err != nil {
			return "", fmt.Errorf("view %s.%s: drop: %w", v.db, v.name, err)
		}
	case live:
		prev := r.previousName(v.db, v.name, len(r.staged)+i)
		if err := rename(ctx, r.cl, v.db, v.name, prev, false); err != nil {
			return "", fmt.Errorf("view %s.%s: keep the replaced collection: %w", v.db, v.name, err)
		}
		previous = v.db + "." + prev
	}
	cmd := bson.D{{Key: "create", Value: v.name}}
	opts, err := createOptions(v.options)
	if err != nil {
		return "", err
	}
	if err := db.RunCommand(ctx, append(cmd, opts...)).Err(); err != nil {
		return "", fmt.Errorf("view %s.%s: create: %w", v.db, v.name, err)
	}
	return previous, nil
}
