package bucketurl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/sirupsen/logrus"
	"google.golang.org/api/googleapi"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
)

// EnvGCSProject names the Google Cloud project a new gs:// bucket is
// created in (the URL's ?project= wins).
const EnvGCSProject = "GOOGLE_CLOUD_PROJECT"

// Create creates the bucket (or container, or directory) rawURL names,
// and describes it. It reports false, and no error, when it already
// exists and is the caller's: it is safe to run at every start. Nothing
// under the URL's prefix is written.
func Create(ctx context.Context, rawURL string, log logrus.FieldLogger) (desc string, created bool, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", false, fmt.Errorf("bucket url %q: %w", rawURL, err)
	}
	project := ""
	if u.Scheme == "gs" {
		q := u.Query()
		project = q.Get("project")
		q.Del("project")
		u.RawQuery = q.Encode()
		if project == "" {
			project = os.Getenv(EnvGCSProject)
		}
	}
	dirExisted := false
	if u.Scheme == "file" || u.Scheme == "" {
		path := u.Path
		if u.Scheme == "" {
			path = rawURL
		}
		fi, serr := os.Stat(path)
		dirExisted = serr == nil && fi.IsDir()
	}
	b, desc, err := Open(ctx, u.String(), log)
	if err != nil {
		return "", false, err
	}
	inner, _ := bucket.Unprefixed(b)
	switch ib := inner.(type) {
	case *s3.Bucket:
		created, err = ib.Create(ctx)
	case *gcs.Bucket:
		if project == "" {
			return desc, false, fmt.Errorf("create %s: name the Google Cloud project to create it in: the URL's ?project= or %s", desc, EnvGCSProject)
		}
		err = ib.Client().Bucket(u.Host).Create(ctx, project, nil)
		var ge *googleapi.Error
		switch {
		case err == nil:
			created = true
		case errors.As(err, &ge) && ge.Code == http.StatusConflict:
			if _, aerr := ib.Client().Bucket(u.Host).Attrs(ctx); aerr == nil {
				err = nil
			} else if errors.Is(aerr, storage.ErrBucketNotExist) || errors.As(aerr, &ge) {
				err = fmt.Errorf("create %s: the name is taken by another project (bucket names are global): choose another", desc)
			}
		}
	case *azblob.Bucket:
		_, err = ib.Client().Create(ctx, nil)
		var re *azcore.ResponseError
		switch {
		case err == nil:
			created = true
		case errors.As(err, &re) && re.ErrorCode == "ContainerAlreadyExists":
			err = nil
		}
	case *fs.Bucket:
		// Open made the directory when it was missing.
		created = !dirExisted
	default:
		return desc, false, fmt.Errorf("create %s: not supported for this kind of bucket", desc)
	}
	if err != nil {
		return desc, false, fmt.Errorf("create %s: %w", desc, err)
	}
	return desc, created, nil
}
