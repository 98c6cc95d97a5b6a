package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Certificates are the files of a broker's TLS: a private certificate
// authority and the broker's certificate, signed by it. Clients trust CA.
type Certificates struct {
	CA, Cert, Key string
}

// TLSDir is where a broker keeps its certificates, under its data
// directory.
func TLSDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// EnsureCertificates makes, in dir, a certificate authority and a broker
// certificate for hosts (names and IP addresses), unless they are there,
// and returns their files and whether it made them. Private keys are mode
// 0600; the authority's key stays in dir, beside ca.pem, to sign more
// brokers' certificates later.
func EnsureCertificates(dir string, hosts []string) (Certificates, bool, error) {
	c := Certificates{
		CA:   filepath.Join(dir, "ca.pem"),
		Cert: filepath.Join(dir, "broker.pem"),
		Key:  filepath.Join(dir, "broker-key.pem"),
	}
	if _, err := os.Stat(c.Cert); err == nil {
		return c, false, nil
	}
	if len(hosts) == 0 {
		return c, false, errors.New("auth: a broker certificate needs at least one host name or address")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return c, false, fmt.Errorf("certificates directory %s: %w", dir, err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, false, fmt.Errorf("make the certificate authority's key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "baton certificate authority"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return c, false, fmt.Errorf("make the certificate authority: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, false, fmt.Errorf("make the broker's key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// A broker also proves itself to the brokers of its cluster, as the
		// client of a route.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return c, false, fmt.Errorf("make the broker's certificate: %w", err)
	}
	files := []struct {
		path  string
		block string
		der   []byte
		mode  os.FileMode
	}{
		{filepath.Join(dir, "ca-key.pem"), "EC PRIVATE KEY", marshalKey(caKey), 0o600},
		{c.CA, "CERTIFICATE", caDER, 0o644},
		{c.Key, "EC PRIVATE KEY", marshalKey(key), 0o600},
		{c.Cert, "CERTIFICATE", der, 0o644},
	}
	for _, f := range files {
		if err := writeAtomic(f.path, pem.EncodeToMemory(&pem.Block{Type: f.block, Bytes: f.der}), f.mode); err != nil {
			return c, false, err
		}
	}
	return c, true, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func marshalKey(k *ecdsa.PrivateKey) []byte {
	b, _ := x509.MarshalECPrivateKey(k)
	return b
}
