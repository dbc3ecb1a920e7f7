package enginetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a test certificate authority and what it signed, as PEM files
// (keys 0600) in a test's temporary directory.
type PKI struct {
	// CA signed ServerCert and ClientCert.
	CA string
	// ServerCert holds 127.0.0.1 and the name ServerName, and may serve
	// as a client certificate too.
	ServerCert, ServerKey string
	// ClientCert is for client authentication only.
	ClientCert, ClientKey string
	// OtherCA has the same subject as CA and another key: it signed
	// nothing here.
	OtherCA string
}

// ServerName is the DNS name in PKI.ServerCert.
const ServerName = "db.capsule.test"

// NewPKI makes a CA, a server and a client certificate, and an unrelated
// CA, with crypto/x509.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serial := int64(0)
	next := func() *big.Int { serial++; return big.NewInt(time.Now().UnixNano() + serial) }
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	newCA := func() (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: next(), Subject: pkix.Name{CommonName: "capsule test ca"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, key, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage []x509.ExtKeyUsage, ips []net.IP, names []string) (certDER, keyDER []byte) {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: next(), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IPAddresses: ips, DNSNames: names,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return der, kder
	}
	ca, caKey, caDER := newCA()
	_, _, otherDER := newCA()
	p := &PKI{CA: write("ca.pem", "CERTIFICATE", caDER), OtherCA: write("other-ca.pem", "CERTIFICATE", otherDER)}
	c, k := leaf(ca, caKey, ServerName, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		[]net.IP{net.IPv4(127, 0, 0, 1)}, []string{ServerName})
	p.ServerCert, p.ServerKey = write("server.pem", "CERTIFICATE", c), write("server.key", "EC PRIVATE KEY", k)
	c, k = leaf(ca, caKey, "capsule client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil)
	p.ClientCert, p.ClientKey = write("client.pem", "CERTIFICATE", c), write("client.key", "EC PRIVATE KEY", k)
	return p
}
