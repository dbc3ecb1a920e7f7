package scanner

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AppRef names a CnvrgApp.
type AppRef struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

func (a AppRef) String() string { return a.Namespace + "/" + a.Name }

// Plan is one enabled backup block of a CnvrgApp: what to back up, where,
// how often and how many backups to keep.
type Plan struct {
	// Name is <namespace>/<cnvrgapp>/<service>: the plan's name in
	// requests and indexes, and the source's name.
	Name string
	App  AppRef
	// Service is the key under spec.dbs: pg, redis or es.
	Service string
	// Cluster groups the plan's backups: <namespace>/<cnvrgapp>, or the
	// scanner's configured cluster.
	Cluster string
	// Engine names the engine (postgres, redis, elasticsearch).
	Engine string
	// Host and Port are where the service listens.
	Host string
	Port int
	// SourceConfig is the engine's source settings; never a secret.
	SourceConfig map[string]any
	// CredsSecret names the Secret the credentials came from ("" for none).
	CredsSecret string
	Bucket      BucketSpec
	Schedule    Schedule
	// Rotation is how many successful backups to keep.
	Rotation int
	// Verify, when set, schedules verifications of the newest backup.
	Verify *VerifyPolicy
	// PITR turns on point-in-time recovery (PostgreSQL plans only): the
	// source gets pitr: true, so its backups are base backups, and the
	// workers stream its WAL into the plan's bucket (Scanner.PITRJobs).
	PITR bool
	// From says where the plan came from: FromCnvrgApp (a backup block of
	// the CnvrgApp) or FromPVC (the capsule.mlops.cnvrg.io/ annotations
	// the operator writes on the PostgreSQL PVC).
	From string
	// PVC names the annotated claim of a plan from a PVC.
	PVC string
	// Recipients are the age public keys the plan's backups are
	// encrypted to (backup.encryption.recipients, or the annotation
	// capsule.cnvrg.io/recipients-<svc>); none: the worker's.
	Recipients []string
	// IdentitySecret names the Secret whose age identities open the
	// plan's backups for restores and verifications
	// (backup.encryption.identityRef, or capsule.cnvrg.io/identity-<svc>).
	IdentitySecret string

	// password is the Secret's value, read at the scan; it stays in
	// memory and reaches the engine only through Source().Password.
	password    string
	hasPassword bool
	// admin is POSTGRESQL_ADMIN_PASSWORD, the postgres superuser's, for
	// restores the application role cannot do (Scanner.RestoreAs).
	admin    string
	hasAdmin bool
	// identities are IdentitySecret's identity values by origin, read at
	// the scan; they reach the executor only through Source().Identities.
	identities map[string][]byte
}

// VerifyPolicy schedules verifications: after every Every-th backup, or
// once per slot of Schedule.
type VerifyPolicy struct {
	Every    int
	Schedule *Schedule
}

// Source returns the plan's source as the executor resolves it. Its
// Password returns the value read from the Secret at the last scan.
func (p Plan) Source() engines.Source {
	cfg := make(map[string]any, len(p.SourceConfig))
	for k, v := range p.SourceConfig {
		cfg[k] = v
	}
	src := engines.Source{Name: p.Name, Engine: p.Engine, Config: cfg, Recipients: p.Recipients}
	if len(p.identities) > 0 {
		ids := p.identities
		src.Identities = func(context.Context) (map[string][]byte, error) { return ids, nil }
	}
	if p.hasPassword {
		pw := p.password
		src.Password = func(context.Context) (string, error) { return pw, nil }
	}
	return src
}

// planJSON is how a plan prints: no secret, only where they come from.
type planJSON struct {
	Name     string         `json:"name"`
	From     string         `json:"from"`
	PVC      string         `json:"pvc,omitempty"`
	App      AppRef         `json:"app"`
	Service  string         `json:"service"`
	Cluster  string         `json:"cluster"`
	Source   sourceJSON     `json:"source"`
	Bucket   bucketJSON     `json:"bucket"`
	Schedule scheduleJSON   `json:"schedule"`
	Rotation int            `json:"rotation"`
	Verify   map[string]any `json:"verify,omitempty"`
	// PITR: point-in-time recovery on (WAL streamed, base backups).
	PITR bool `json:"pitr"`
	// Encryption: the recipients (public keys) and the identity
	// Secret's name, never its content.
	Encryption map[string]any `json:"encryption,omitempty"`
}

type sourceJSON struct {
	Name   string         `json:"name"`
	Engine string         `json:"engine"`
	Host   string         `json:"host"`
	Port   int            `json:"port"`
	Config map[string]any `json:"config"`
	// CredsSecret names the Secret; Password says whether it gave one,
	// AdminPassword whether it gave POSTGRESQL_ADMIN_PASSWORD too.
	CredsSecret   string `json:"credsSecret,omitempty"`
	Password      bool   `json:"password"`
	AdminPassword bool   `json:"adminPassword,omitempty"`
}

type bucketJSON struct {
	Secret      string `json:"secret"`
	Type        string `json:"type"`
	URL         string `json:"url"`
	Endpoint    string `json:"endpoint,omitempty"`
	Region      string `json:"region,omitempty"`
	Account     string `json:"account,omitempty"`
	Bucket      string `json:"bucket"`
	Prefix      string `json:"prefix"`
	Credentials string `json:"credentials"`
}

type scheduleJSON struct {
	Spec   string `json:"spec"`
	Kind   string `json:"kind"`
	Period string `json:"period,omitempty"`
}

func scheduleView(s Schedule) scheduleJSON {
	if s.IsCron() {
		return scheduleJSON{Spec: s.Spec, Kind: "cron"}
	}
	return scheduleJSON{Spec: s.Spec, Kind: "period", Period: s.Period.String()}
}

// MarshalJSON prints the plan without its secrets.
func (p Plan) MarshalJSON() ([]byte, error) {
	v := planJSON{
		Name: p.Name, From: p.From, PVC: p.PVC, App: p.App, Service: p.Service, Cluster: p.Cluster,
		Source: sourceJSON{Name: p.Name, Engine: p.Engine, Host: p.Host, Port: p.Port, Config: p.SourceConfig,
			CredsSecret: p.CredsSecret, Password: p.hasPassword && p.password != "", AdminPassword: p.hasAdmin},
		Bucket: bucketJSON{Secret: p.Bucket.Secret, Type: p.Bucket.Type, URL: p.Bucket.URL(), Endpoint: p.Bucket.Endpoint,
			Region: p.Bucket.Region, Account: p.Bucket.Account, Bucket: p.Bucket.Bucket, Prefix: p.Bucket.Prefix, Credentials: p.Bucket.Credentials()},
		Schedule: scheduleView(p.Schedule),
		Rotation: p.Rotation,
		PITR:     p.PITR,
	}
	if len(p.Recipients) > 0 || p.IdentitySecret != "" {
		v.Encryption = map[string]any{"recipients": p.Recipients, "identitySecret": p.IdentitySecret}
	}
	if p.Verify != nil {
		if p.Verify.Every > 0 {
			v.Verify = map[string]any{"every": p.Verify.Every}
		} else if p.Verify.Schedule != nil {
			v.Verify = map[string]any{"schedule": scheduleView(*p.Verify.Schedule)}
		}
	}
	return json.Marshal(v)
}

// Problem is an invalid backup block: it becomes a Kubernetes Event on the
// CnvrgApp (or the annotated PVC) and a log line, and the block is left
// out of the plans.
type Problem struct {
	// App is the CnvrgApp; for a PVC's annotations, the CnvrgApp that owns
	// the PVC, else only the PVC's namespace.
	App AppRef `json:"app"`
	// PVC names the annotated PersistentVolumeClaim the problem is on.
	PVC string `json:"pvc,omitempty"`
	// Field is the path of the bad setting (spec.dbs.pg.backup.period,
	// metadata.annotations[capsule.mlops.cnvrg.io/period]).
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p Problem) Error() string { return p.Field + ": " + p.Message }

// Where names the object the problem is on: namespace/cnvrgapp, or
// persistentvolumeclaim namespace/name.
func (p Problem) Where() string {
	if p.PVC != "" {
		return "persistentvolumeclaim " + p.App.Namespace + "/" + p.PVC
	}
	return p.App.String()
}

// The services of spec.dbs that capsule backs up.
var services = []struct {
	key, engine, svcName string
	port                 int
}{
	{"pg", "postgres", "postgres", 5432},
	{"redis", "redis", "redis", 6379},
	{"es", "elasticsearch", "elasticsearch", 9200},
}

// Defaults of a backup block (the platform's conventions).
const (
	DefaultBucketRef = "cp-object-storage"
	DefaultPeriod    = "24h"
	DefaultRotation  = 5
	// VerifyAnnotationPrefix + service ("capsule.cnvrg.io/verify-pg")
	// schedules verifications: "every=N" or "period=24h".
	VerifyAnnotationPrefix = "capsule.cnvrg.io/verify-"
	// RecipientsAnnotationPrefix + service names the age recipients of
	// the service's backups (public keys, separated by commas or
	// newlines), where the CRD prunes backup.encryption.
	RecipientsAnnotationPrefix = "capsule.cnvrg.io/recipients-"
	// IdentityAnnotationPrefix + service names the Secret whose age
	// identities open the service's backups.
	IdentityAnnotationPrefix = "capsule.cnvrg.io/identity-"
	// PITRAnnotationPrefix + service ("capsule.cnvrg.io/pitr-pg":
	// "true" or "false") turns point-in-time recovery on or off, where
	// the CRD prunes backup.pitr. PostgreSQL only.
	PITRAnnotationPrefix = "capsule.cnvrg.io/pitr-"
	// AdminRole is the PostgreSQL superuser of the platform's PostgreSQL
	// image, whose password pg-creds holds as POSTGRESQL_ADMIN_PASSWORD.
	AdminRole        = "postgres"
	keyAdminPassword = "POSTGRESQL_ADMIN_PASSWORD"
)

// secretGetter reads a Secret's data; a missing Secret is an apierrors
// NotFound.
type secretGetter func(ctx context.Context, namespace, name string) (map[string][]byte, error)

// parser turns CnvrgApps into plans.
type parser struct {
	cluster string
	prefix  string
	hostFor func(svcName, namespace string) string
	engines *engines.Registry
	secret  secretGetter
	// fp names bucket credentials (BucketSpec.Key); nil leaves them
	// unnamed (unit tests).
	fp *fingerprinter
	// stagingDir is the stagingDir of PostgreSQL plans ("" for the
	// engine's default).
	stagingDir string
	// gcpKeyFile is where this pod may have a gcp service account key
	// (DefaultGCPKeyFile when ""; tests change it).
	gcpKeyFile string
	// notice logs a fact about a plan once per key (nil: not logged).
	notice func(key string, fields logrus.Fields, msg string)
}

func (ps *parser) note(key string, fields logrus.Fields, msg string) {
	if ps.notice != nil {
		ps.notice(key, fields, msg)
	}
}

// appResult is what one CnvrgApp gave.
type appResult struct {
	plans    []Plan
	problems []Problem
	// secrets are the Secrets it refers to (namespace/name), found or not.
	secrets []string
}

// app reads the backup blocks of one CnvrgApp.
func (ps *parser) app(ctx context.Context, obj *unstructured.Unstructured) appResult {
	var res appResult
	ref := AppRef{Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID()}
	cluster := ps.cluster
	if cluster == "" {
		cluster = ref.Namespace + "/" + ref.Name
	}
	for _, svc := range services {
		b := &block{ps: ps, ctx: ctx, obj: obj, ref: ref, svc: svc.key, res: &res}
		p, ok := b.plan(svc.engine, svc.svcName, svc.port, cluster)
		if ok {
			res.plans = append(res.plans, p)
		}
	}
	sort.Strings(res.secrets)
	res.secrets = dedupe(res.secrets)
	return res
}

// block reads one spec.dbs.<svc> block, or a PVC's annotations.
type block struct {
	ps  *parser
	ctx context.Context
	obj *unstructured.Unstructured
	ref AppRef
	svc string
	res *appResult
	bad bool
	// pvc names the annotated PVC, and pathOf names its settings, for a
	// plan from a PVC.
	pvc    string
	pathOf func(fields ...string) string
}

func (b *block) path(fields ...string) string {
	if b.pathOf != nil {
		return b.pathOf(fields...)
	}
	return strings.Join(append([]string{"spec", "dbs", b.svc}, fields...), ".")
}

func (b *block) problem(field, format string, args ...any) {
	b.bad = true
	b.warning(field, format, args...)
}

// warning reports a problem that does not stop the backups (a bad
// verification setting leaves the plan without verifications).
func (b *block) warning(field, format string, args ...any) {
	b.res.problems = append(b.res.problems, Problem{App: b.ref, PVC: b.pvc, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (b *block) field(fields ...string) (any, bool) {
	v, ok, err := unstructured.NestedFieldNoCopy(b.obj.Object, append([]string{"spec", "dbs", b.svc}, fields...)...)
	if err != nil || !ok || v == nil {
		return nil, false
	}
	return v, true
}

func (b *block) str(fields ...string) string {
	v, ok := b.field(fields...)
	if !ok {
		return ""
	}
	s, isStr := v.(string)
	if !isStr {
		b.problem(b.path(fields...), "must be a string, got %T", v)
		return ""
	}
	return s
}

func (b *block) boolean(fields ...string) (bool, bool) {
	v, ok := b.field(fields...)
	if !ok {
		return false, false
	}
	x, isBool := v.(bool)
	if !isBool {
		b.problem(b.path(fields...), "must be true or false, got %T", v)
		return false, false
	}
	return x, true
}

func (b *block) integer(fields ...string) (int64, bool) {
	v, ok := b.field(fields...)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case float64:
		if n == float64(int64(n)) {
			return int64(n), true
		}
	}
	b.problem(b.path(fields...), "must be a whole number, got %v", v)
	return 0, false
}

func (b *block) readSecret(field, name string) map[string][]byte {
	b.res.secrets = append(b.res.secrets, b.ref.Namespace+"/"+name)
	data, err := b.ps.secret(b.ctx, b.ref.Namespace, name)
	if apierrors.IsNotFound(err) {
		b.problem(field, "Secret %q not found in namespace %s", name, b.ref.Namespace)
		return nil
	}
	if err != nil {
		b.problem(field, "Secret %q: %v", name, err)
		return nil
	}
	return data
}

func (b *block) plan(engine, defSvc string, defPort int, cluster string) (Plan, bool) {
	if _, ok := b.field(); !ok {
		return Plan{}, false
	}
	if _, ok := b.field("backup"); !ok {
		return Plan{}, false
	}
	if on, _ := b.boolean("backup", "enabled"); !on || b.bad {
		return Plan{}, false
	}
	if on, set := b.boolean("enabled"); set && !on {
		b.problem(b.path("enabled"), "is false (the service is not deployed), but backup.enabled is true: nothing to back up")
		return Plan{}, false
	}
	ps := planSpec{
		name: b.ref.Namespace + "/" + b.ref.Name + "/" + b.svc, cluster: cluster, engine: engine, from: FromCnvrgApp,
	}

	svcName := b.str("svcName")
	if svcName == "" {
		svcName = defSvc
	}
	// The name becomes a host name in the source's URL: a Service's name
	// (an RFC 1123 label) and nothing else, not a host:port, user@host or
	// host/path.
	if errs := validation.IsDNS1123Label(svcName); len(errs) > 0 {
		b.problem(b.path("svcName"), "%q is not a Service name (an RFC 1123 DNS label): %s", svcName, errs[0])
	}
	ps.host = b.ps.hostFor(svcName, b.ref.Namespace)
	ps.port = defPort
	if n, ok := b.integer("port"); ok {
		if n < 1 || n > 65535 {
			b.problem(b.path("port"), "%d is not a port number (1-65535)", n)
		}
		ps.port = int(n)
	}
	ps.schedule = b.schedule(b.path("backup", "period"), b.str("backup", "period"))
	ps.rotation = DefaultRotation
	if n, ok := b.integer("backup", "rotation"); ok {
		ps.rotation = b.rotation(b.path("backup", "rotation"), n)
	}
	ps.verify = b.verify()
	ps.pitr = b.pitr(engine)
	b.encryption(&ps)
	ps.bucketRef, ps.bucketField = b.str("backup", "bucketRef"), b.path("backup", "bucketRef")
	// The credentials: backup.credsRef, else the service's.
	ps.credsField, ps.creds = b.path("backup", "credsRef"), b.str("backup", "credsRef")
	if ps.creds == "" {
		ps.credsField, ps.creds = b.path("credsRef"), b.str("credsRef")
	}
	return b.build(ps)
}

// The origins of a plan (Plan.From).
const (
	FromCnvrgApp = "cnvrgapp"
	FromPVC      = "pvc"
)

// planSpec is what a backup block, or a PVC's annotations, say about a
// plan before its Secrets are read.
type planSpec struct {
	name, cluster, engine, from string
	// host and port of the service; a plan from a PVC has no host until
	// the credentials Secret's POSTGRES_HOST names the Service (hostField
	// is then where a problem points).
	host      string
	port      int
	hostField string
	schedule  Schedule
	rotation  int
	verify    *VerifyPolicy
	// pitr: point-in-time recovery on (postgres only; checked when read).
	pitr bool
	// The Secrets and the fields that name them.
	bucketRef, bucketField string
	creds, credsField      string
	// Encryption: the recipients, and the identity Secret and the field
	// that names it.
	recipients              []string
	identityRef, identField string
}

// schedule reads a period or cron expression (default DefaultPeriod).
func (b *block) schedule(field, period string) Schedule {
	if period == "" {
		period = DefaultPeriod
	}
	s, err := ParseSchedule(period)
	switch {
	case err != nil:
		b.problem(field, "%v", err)
	case !s.IsCron() && s.Period < MinPeriod:
		b.problem(field, "%q is shorter than %s", period, MinPeriod)
	default:
		return s
	}
	return Schedule{}
}

func (b *block) rotation(field string, n int64) int {
	if n < 1 {
		b.problem(field, "must be at least 1 (capsule never deletes the last good backup), got %d", n)
	}
	return int(n)
}

// ignoredEndpointNote says why a CNVRG_STORAGE_ENDPOINT was not used, by
// CNVRG_STORAGE_TYPE (BucketSpec.IgnoredEndpoint).
var ignoredEndpointNote = map[string]string{
	"aws": "CNVRG_STORAGE_TYPE is aws and CNVRG_STORAGE_ENDPOINT is the operator's in-cluster MinIO URL: ignoring the endpoint and writing to AWS S3, as the old capsule service did",
	"azure": "CNVRG_STORAGE_TYPE is azure and CNVRG_STORAGE_ENDPOINT is neither the account's blob endpoint (https://ACCOUNT.blob.…) nor an emulator's IP address " +
		"(the operator writes its MinIO URL into every Secret): ignoring the endpoint and writing to the account on Azure",
	"gcp": "CNVRG_STORAGE_TYPE is gcp and CNVRG_STORAGE_ENDPOINT is not an emulator's IP address " +
		"(the operator writes its MinIO URL into every Secret): ignoring the endpoint and writing to Google Cloud Storage",
}

// build reads the plan's Secrets and makes the plan.
func (b *block) build(ps planSpec) (Plan, bool) {
	p := Plan{
		Name: ps.name, App: b.ref, Service: b.svc, Cluster: ps.cluster, Engine: ps.engine, From: ps.from, PVC: b.pvc,
		Host: ps.host, Port: ps.port, Schedule: ps.schedule, Rotation: ps.rotation, Verify: ps.verify,
		PITR: ps.pitr && ps.engine == "postgres",
	}
	if err := requests.ValidateName(p.Name); err != nil {
		b.problem("metadata.name", "plan name: %v", err)
	}
	if err := requests.ValidateName(p.Cluster); err != nil {
		b.problem("metadata.name", "cluster: %v", err)
	}

	// The bucket.
	bucketRef := ps.bucketRef
	if bucketRef == "" {
		bucketRef = DefaultBucketRef
	}
	if data := b.readSecret(ps.bucketField, bucketRef); data != nil {
		spec, err := bucketSpec(bucketRef, data, b.ps.prefix)
		if err == nil && spec.Type == "gcp" {
			err = b.gcpKey(&spec, bucketRef)
		}
		if err != nil {
			b.problem(ps.bucketField, "Secret %q: %v", bucketRef, err)
		}
		if b.ps.fp != nil {
			spec.identity = b.ps.fp.identity(spec.secrets())
		}
		if spec.IgnoredEndpoint != "" && err == nil {
			fields := logrus.Fields{"secret": b.ref.Namespace + "/" + bucketRef, "endpoint": spec.IgnoredEndpoint, "bucket": spec.Bucket}
			if spec.Region != "" {
				fields["region"] = spec.Region
			}
			if spec.Account != "" {
				fields["account"] = spec.Account
			}
			b.ps.note(spec.Type+"-endpoint/"+b.ref.Namespace+"/"+bucketRef+"/"+spec.IgnoredEndpoint, fields, ignoredEndpointNote[spec.Type])
		} else if spec.Type == "aws" && spec.Endpoint != "" && err == nil {
			b.ps.note("aws-endpoint/"+b.ref.Namespace+"/"+bucketRef+"/"+spec.Endpoint, logrus.Fields{
				"secret": b.ref.Namespace + "/" + bucketRef, "endpoint": spec.Endpoint, "bucket": spec.Bucket,
			}, "CNVRG_STORAGE_TYPE is aws with a CNVRG_STORAGE_ENDPOINT that is not the operator's MinIO: using that endpoint (the old capsule service ignored it and went to AWS S3)")
		}
		p.Bucket = spec
	}

	p.Recipients, p.IdentitySecret = ps.recipients, ps.identityRef
	if ps.identityRef != "" {
		if data := b.readSecret(ps.identField, ps.identityRef); data != nil {
			p.identities = b.identities(ps.identField, ps.identityRef, data)
		}
	}
	var secret map[string][]byte
	if ps.creds != "" {
		secret = b.readSecret(ps.credsField, ps.creds)
		p.CredsSecret = ps.creds
	}
	if b.bad {
		return Plan{}, false
	}
	// key returns a Secret's value: the first of the names it has.
	key := func(names ...string) (string, bool) {
		for _, k := range names {
			if v, ok := secret[k]; ok {
				return string(v), true
			}
		}
		return "", false
	}
	if p.Host == "" {
		// A PVC names no Service: the credentials Secret's POSTGRES_HOST
		// does (the old capsule service connected to
		// <POSTGRES_HOST>.<namespace>), default postgres.
		svcName, _ := key("POSTGRES_HOST")
		if svcName == "" {
			svcName = services[0].svcName
		}
		if errs := validation.IsDNS1123Label(svcName); len(errs) > 0 {
			b.problem(ps.hostField, "Secret %q: POSTGRES_HOST %q is not a Service name (an RFC 1123 DNS label): %s", ps.creds, svcName, errs[0])
			return Plan{}, false
		}
		p.Host = b.ps.hostFor(svcName, b.ref.Namespace)
	}
	hostPort := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	switch p.Engine {
	case "postgres":
		if ps.creds == "" {
			b.problem(ps.credsField, "is required for PostgreSQL (a Secret with POSTGRES_USER and POSTGRES_PASSWORD)")
			break
		}
		// The operator's pg-creds has both spellings: POSTGRES_* and the
		// PostgreSQL image's POSTGRESQL_*.
		user, _ := key("POSTGRES_USER", "POSTGRESQL_USER")
		if user == "" {
			b.problem(ps.credsField, "Secret %q has no POSTGRES_USER", ps.creds)
			break
		}
		u := url.URL{Scheme: "postgres", User: url.User(user), Host: hostPort}
		p.SourceConfig = map[string]any{}
		if db, _ := key("POSTGRES_DB", "POSTGRESQL_DATABASE"); db != "" {
			u.Path = "/" + db
		} else {
			p.SourceConfig["databases"] = "all"
		}
		p.SourceConfig["url"] = u.String()
		if b.ps.stagingDir != "" {
			p.SourceConfig["stagingDir"] = b.ps.stagingDir
		}
		if p.PITR {
			// Base backups, and a WAL stream (Scanner.PITRJobs).
			p.SourceConfig["pitr"] = true
		}
		p.password, p.hasPassword = key("POSTGRES_PASSWORD", "POSTGRESQL_PASSWORD")
		// The postgres superuser's password, for restores the application
		// role cannot do (Scanner.RestoreAs); never for backups.
		if pw, ok := key(keyAdminPassword); ok && pw != "" {
			p.admin, p.hasAdmin = pw, true
		}
	case "redis":
		u := url.URL{Scheme: "redis", Host: hostPort}
		if ps.creds != "" {
			pw, ok := key("CNVRG_REDIS_PASSWORD")
			if raw, has := key("REDIS_URL"); has && raw != "" {
				ru, err := url.Parse(raw)
				if err != nil {
					// url's errors quote the URL, which holds the password.
					b.problem(ps.credsField, "Secret %q: REDIS_URL is not a valid URL", ps.creds)
					break
				}
				if ru.User != nil {
					if name := ru.User.Username(); name != "" {
						u.User = url.User(name)
					}
					if urlPW, has := ru.User.Password(); has && !ok {
						pw, ok = urlPW, true
					}
				}
			}
			p.password, p.hasPassword = pw, ok
		}
		p.SourceConfig = map[string]any{"url": u.String(), "databases": "all"}
	case "elasticsearch":
		// The operator's Elasticsearch speaks plain HTTP inside the cluster.
		u := url.URL{Scheme: "http", Host: hostPort}
		p.SourceConfig = map[string]any{"url": u.String(), "indices": []any{"*"}}
		if ps.creds != "" {
			if user, _ := key("CNVRG_ES_USER"); user != "" {
				p.SourceConfig["user"] = user
			}
			p.password, p.hasPassword = key("CNVRG_ES_PASS")
		}
	}
	if b.bad {
		return Plan{}, false
	}
	if b.ps.engines != nil {
		eng, err := b.ps.engines.Get(p.Engine)
		if err != nil {
			b.problem(b.path("backup", "enabled"), "this capsule cannot back up %s: %v", p.Engine, err)
			return Plan{}, false
		}
		if err := eng.Validate(p.Source()); err != nil {
			b.problem(b.path(), "%v", err)
			return Plan{}, false
		}
	}
	return p, true
}

// verify reads spec.dbs.<svc>.backup.verify ({every: N} or {period: 24h};
// the shipped CRD prunes it, later ones may keep it), else the annotation
// capsule.cnvrg.io/verify-<svc> ("every=N" or "period=24h").
func (b *block) verify() *VerifyPolicy {
	var every, period string
	field := b.path("backup", "verify")
	if v, ok := b.field("backup", "verify"); ok {
		m, isMap := v.(map[string]any)
		if !isMap {
			b.warning(field, "must be an object {every: N} or {period: 24h}, got %T", v)
			return nil
		}
		for k, x := range m {
			switch k {
			case "every":
				every = fmt.Sprint(x)
			case "period":
				period = fmt.Sprint(x)
			default:
				b.warning(field+"."+k, "unknown setting (every or period)")
				return nil
			}
		}
	} else if a, ok := b.obj.GetAnnotations()[VerifyAnnotationPrefix+b.svc]; ok {
		field = "metadata.annotations." + VerifyAnnotationPrefix + b.svc
		k, v, found := strings.Cut(strings.TrimSpace(a), "=")
		switch {
		case !found:
			b.warning(field, "%q: want every=N or period=<period>", a)
			return nil
		case k == "every":
			every = v
		case k == "period":
			period = v
		default:
			b.warning(field, "%q: want every=N or period=<period>", a)
			return nil
		}
	} else {
		return nil
	}
	switch {
	case every != "" && period != "":
		b.warning(field, "set every or period, not both")
	case every != "":
		n, err := strconv.Atoi(strings.TrimSpace(every))
		if err != nil || n < 1 {
			b.warning(field, "every: %q is not a whole number of backups of at least 1", every)
			return nil
		}
		return &VerifyPolicy{Every: n}
	case period != "":
		s, err := ParseSchedule(period)
		if err != nil {
			b.warning(field, "period: %v", err)
			return nil
		}
		return &VerifyPolicy{Schedule: &s}
	}
	return nil
}

// pitr reads spec.dbs.<svc>.backup.pitr (true or false; the shipped CRD
// prunes it, later ones may keep it), else the annotation
// capsule.cnvrg.io/pitr-<svc> ("true" or "false"). A bad value, or pitr
// on a service other than PostgreSQL, is reported like a bad
// verification setting: the plan's backups go on, without point-in-time
// recovery.
func (b *block) pitr(engine string) bool {
	field := b.path("backup", "pitr")
	var on bool
	if v, ok := b.field("backup", "pitr"); ok {
		x, isBool := v.(bool)
		if !isBool {
			b.warning(field, "must be true or false, got %T: the backups go on without point-in-time recovery", v)
			return false
		}
		on = x
	} else if a, ok := b.obj.GetAnnotations()[PITRAnnotationPrefix+b.svc]; ok {
		field = "metadata.annotations." + PITRAnnotationPrefix + b.svc
		if on, ok = b.pitrValue(field, a); !ok {
			return false
		}
	} else {
		return false
	}
	return b.pitrOn(field, engine, on)
}

// pitrValue reads an annotation's "true" or "false", reporting any other
// value at field.
func (b *block) pitrValue(field, v string) (on, ok bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	b.warning(field, "%q: want \"true\" or \"false\"; the backups go on without point-in-time recovery", v)
	return false, false
}

// pitrOn refuses point-in-time recovery for an engine other than
// postgres, reporting it at field.
func (b *block) pitrOn(field, engine string, on bool) bool {
	if on && engine != "postgres" {
		b.warning(field, "point-in-time recovery is for PostgreSQL only, not %s: the backups go on without it", engine)
		return false
	}
	return on
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// IdentityKeys are the keys of an identity Secret that hold age
// identities (an age identity file, or an SSH private key: a
// kubernetes.io/ssh-auth Secret's ssh-privatekey); the first that exists
// is used, and with none, every key of the Secret is tried.
var IdentityKeys = []string{"AGE_IDENTITY", "age-identity", "identity", "ssh-privatekey"}

// encryption reads spec.dbs.<svc>.backup.encryption ({recipients: [...],
// identityRef: SECRET}), else the annotations
// capsule.cnvrg.io/recipients-<svc> and capsule.cnvrg.io/identity-<svc>.
func (b *block) encryption(ps *planSpec) {
	field := b.path("backup", "encryption")
	var recipients []string
	recField := field + ".recipients"
	if v, ok := b.field("backup", "encryption"); ok {
		m, isMap := v.(map[string]any)
		if !isMap {
			b.problem(field, "must be an object {recipients: [...], identityRef: SECRET}, got %T", v)
			return
		}
		for k, x := range m {
			switch k {
			case "recipients":
				list, ok := x.([]any)
				if !ok {
					b.problem(recField, "must be a list of public keys")
					return
				}
				for _, e := range list {
					s, ok := e.(string)
					if !ok {
						b.problem(recField, "must be a list of public keys (strings)")
						return
					}
					recipients = append(recipients, s)
				}
			case "identityRef":
				s, ok := x.(string)
				if !ok || strings.TrimSpace(s) == "" {
					b.problem(field+".identityRef", "must name a Secret")
					return
				}
				ps.identityRef, ps.identField = strings.TrimSpace(s), field+".identityRef"
			default:
				b.problem(field+"."+k, "unknown setting (recipients or identityRef)")
				return
			}
		}
	} else {
		ann := b.obj.GetAnnotations()
		if a, ok := ann[RecipientsAnnotationPrefix+b.svc]; ok {
			recField = "metadata.annotations." + RecipientsAnnotationPrefix + b.svc
			for _, r := range strings.FieldsFunc(a, func(c rune) bool { return c == ',' || c == '\n' }) {
				if r = strings.TrimSpace(r); r != "" {
					recipients = append(recipients, r)
				}
			}
		}
		if a := strings.TrimSpace(ann[IdentityAnnotationPrefix+b.svc]); a != "" {
			ps.identityRef, ps.identField = a, "metadata.annotations."+IdentityAnnotationPrefix+b.svc
		}
	}
	r, err := crypt.ParseRecipients(recipients)
	if err != nil {
		b.problem(recField, "%v", err)
		return
	}
	ps.recipients = r.Keys()
}

// identities returns the identity values of Secret name (see
// IdentityKeys) by origin, checked: a value that is not an identity is a
// problem at field (never quoted).
func (b *block) identities(field, name string, data map[string][]byte) map[string][]byte {
	keys := IdentityKeys
	for _, k := range IdentityKeys {
		if _, ok := data[k]; ok {
			keys = []string{k}
			break
		}
	}
	if len(keys) > 1 {
		keys = nil
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	out := map[string][]byte{}
	for _, k := range keys {
		v, ok := data[k]
		if !ok {
			continue
		}
		origin := fmt.Sprintf("Secret %s/%s key %s", b.ref.Namespace, name, k)
		if _, err := crypt.ParseIdentities(v, origin); err != nil {
			b.problem(field, "%v", err)
			return nil
		}
		out[origin] = v
	}
	if len(out) == 0 {
		b.problem(field, "Secret %q holds no age identity (keys %s)", name, strings.Join(IdentityKeys, ", "))
	}
	return out
}
