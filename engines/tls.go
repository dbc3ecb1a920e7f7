package engines

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// TLS is a source's transport security: the same "tls" setting in every
// engine that talks to a server over the network.
//
//	tls:
//	  caFile: /etc/capsule/db-ca.pem      # default: the system's CAs
//	  serverName: db.internal             # default: the url's host
//	  certFile: /etc/capsule/client.pem   # a client certificate, with keyFile
//	  keyFile: /etc/capsule/client.key
//	  insecureSkipVerify: false           # encrypt without checking the server
//
// An engine turns it into its client's settings; where a client tool
// cannot honour a setting, the engine refuses it at validation, saying so.
type TLS struct {
	// CAFile is a PEM file of the certificate authorities that sign the
	// server's certificate; default the system's.
	CAFile string `json:"caFile,omitempty"`
	// ServerName is the name the server's certificate must hold; default
	// the url's host.
	ServerName string `json:"serverName,omitempty"`
	// CertFile and KeyFile are a client certificate and its private key
	// (PEM), for servers that ask for one.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// InsecureSkipVerify encrypts without checking the server's
	// certificate: anyone on the path can pose as the server. For tests
	// and emergencies only.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// Validate checks the settings without reading the files, naming the
// bad one as tls.<name>.
func (t *TLS) Validate() error {
	if t == nil {
		return nil
	}
	for name, p := range map[string]string{"caFile": t.CAFile, "certFile": t.CertFile, "keyFile": t.KeyFile} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("setting tls.%s: %q is not an absolute path", name, p)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("settings tls.certFile and tls.keyFile: set both or neither")
	}
	if t.InsecureSkipVerify && (t.CAFile != "" || t.ServerName != "") {
		return errors.New("setting tls.insecureSkipVerify: with it, tls.caFile and tls.serverName would not be checked; remove one or the other")
	}
	return nil
}

// Config returns the crypto/tls configuration for a server reached as
// host: TLS 1.2 or newer, the server's certificate checked against
// CAFile (else the system's CAs) for ServerName (else host), and the
// client certificate if one is set.
func (t *TLS) Config(host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if t == nil {
		return c, nil
	}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	c.InsecureSkipVerify = t.InsecureSkipVerify
	if t.CAFile != "" {
		pool, err := LoadCAFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("setting tls.caFile: %w", err)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("settings tls.certFile and tls.keyFile: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// LoadCAFile reads a PEM file of certificate authorities.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// SystemCAFile returns the system's bundle of certificate authorities,
// for client tools that need a file (libpq before PostgreSQL 16 reads
// none by itself): $SSL_CERT_FILE, else the first bundle found where
// the common Linux distributions keep it. "" when there is none.
func SystemCAFile() string {
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		return f
	}
	for _, f := range []string{
		"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine
		"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
		"/etc/ssl/ca-bundle.pem",                            // openSUSE
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
		"/etc/ssl/cert.pem",                                 // Alpine, macOS
	} {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}
