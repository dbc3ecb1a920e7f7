package gcs

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// The token endpoints Google has put into service account keys; a key that
// names another would send its signed assertion there.
var googleTokenURIs = map[string]bool{
	"":                                    true,
	"https://oauth2.googleapis.com/token": true,
	"https://accounts.google.com/o/oauth2/token": true,
}

// CheckCredentialsJSON checks that key is a service account key capsule
// accepts as Options.CredentialsJSON: a JSON object of type
// "service_account" with a client_email and a PEM private key (PKCS #8,
// PKCS #1 or EC, as Google's libraries read it), whose token_uri, if any,
// is Google's and whose universe_domain, if any, is googleapis.com. Other
// credential types are refused: an external account configuration names
// URLs, files or commands to get its token from, which capsule will not
// take from a Secret. The errors name the field that is wrong, never a
// value of the key.
func CheckCredentialsJSON(key []byte) error {
	var f struct {
		Type           string `json:"type"`
		ClientEmail    string `json:"client_email"`
		PrivateKey     string `json:"private_key"`
		TokenURI       string `json:"token_uri"`
		UniverseDomain string `json:"universe_domain"`
	}
	if err := json.Unmarshal(key, &f); err != nil {
		// json's messages quote the character they stopped at; say where
		// instead.
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return fmt.Errorf("not JSON (syntax error at byte %d): want a service account key", syn.Offset)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return fmt.Errorf("field %s: want a string", typ.Field)
		}
		return errors.New("not a JSON object: want a service account key")
	}
	switch {
	case f.Type != "service_account":
		return errors.New(`type: want "service_account" (only service account keys are accepted)`)
	case f.ClientEmail == "":
		return errors.New("client_email: missing")
	case f.PrivateKey == "":
		return errors.New("private_key: missing")
	case !googleTokenURIs[f.TokenURI]:
		return errors.New("token_uri: not Google's (https://oauth2.googleapis.com/token)")
	case f.UniverseDomain != "" && f.UniverseDomain != "googleapis.com":
		return errors.New("universe_domain: want googleapis.com")
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	if block == nil {
		return errors.New("private_key: not PEM")
	}
	if !signer(block.Bytes) {
		return errors.New("private_key: not a PKCS #8, PKCS #1 or EC private key")
	}
	return nil
}

// signer reports whether der is a private key that can sign, in one of
// the forms Google's auth library reads.
func signer(der []byte) bool {
	var k any
	var err error
	if k, err = x509.ParsePKCS8PrivateKey(der); err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(der); err != nil {
			if k, err = x509.ParseECPrivateKey(der); err != nil {
				return false
			}
		}
	}
	_, ok := k.(crypto.Signer)
	return ok
}
