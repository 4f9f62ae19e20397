package recordings

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Recordings are encrypted at rest with AES-256-GCM when keys are
// configured (RECORDING_KEYS). A stored object is
//
//	"PMGREC1\n" <key id> "\n" <12-byte nonce> <ciphertext and tag>
//
// with the object's key in the blob store as additional data, so a
// recording moved to another patient's place does not decrypt. The key id
// travels with the object: keys rotate by putting a new key first (new
// recordings use it) and keeping the old ones for reading. An object
// without the header was stored before encryption was on and is read as
// it is.

// sealedMagic starts every encrypted recording.
const sealedMagic = "PMGREC1\n"

// ErrUnknownKey: a recording was sealed with a key no longer configured.
var ErrUnknownKey = errors.New("recording sealed with a key that is not configured (RECORDING_KEYS)")

// Keyring holds the recording keys: the first seals, all open.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// ParseKeyring reads RECORDING_KEYS: "id:base64-of-32-bytes" pairs,
// comma separated, the current key first. Ids are 1–32 letters, digits,
// '-' or '_'. Errors never repeat a key.
func ParseKeyring(v string) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	for i, part := range strings.Split(v, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !validKeyID(id) {
			return nil, fmt.Errorf("key %d: want id:base64-key with an id of 1-32 letters, digits, '-' or '_'", i+1)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key %q: want 32 random bytes in standard base64 (e.g. head -c 32 /dev/urandom | base64)", id)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("key %q is listed twice", id)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		k.aeads[id] = aead
		if i == 0 {
			k.current = id
		}
	}
	return k, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Current is the id of the key that seals.
func (k *Keyring) Current() string { return k.current }

// seal encrypts a recording stored under key.
func (k *Keyring) seal(key string, plain []byte) []byte {
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := make([]byte, 0, len(sealedMagic)+len(k.current)+1+len(nonce)+len(plain)+aead.Overhead())
	out = append(out, sealedMagic...)
	out = append(out, k.current...)
	out = append(out, '\n')
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, []byte(key))
}

// sealed says whether a stored object is an encrypted recording.
func sealed(b []byte) bool { return bytes.HasPrefix(b, []byte(sealedMagic)) }

// open decrypts a recording stored under key.
func (k *Keyring) open(key string, b []byte) ([]byte, error) {
	rest := b[len(sealedMagic):]
	i := bytes.IndexByte(rest, '\n')
	if i < 0 || i > 32 {
		return nil, errors.New("recording: malformed encrypted object")
	}
	id := string(rest[:i])
	var aead cipher.AEAD
	if k != nil {
		aead = k.aeads[id]
	}
	if aead == nil {
		return nil, fmt.Errorf("%w: key %q", ErrUnknownKey, id)
	}
	rest = rest[i+1:]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("recording: malformed encrypted object")
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(key))
	if err != nil {
		return nil, errors.New("recording: the encrypted object does not open (altered, or moved from another key)")
	}
	return plain, nil
}

// readAll reads at most MaxSize bytes of r.
func readAll(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err == nil && len(b) > MaxSize {
		err = fmt.Errorf("recording larger than %d bytes", MaxSize)
	}
	return b, err
}

// Seal encrypts plain for the object stored under key (bound in, so an
// object moved elsewhere does not open), as recordings are sealed; the
// archive of messages uses the same keys.
func (k *Keyring) Seal(key string, plain []byte) []byte { return k.seal(key, plain) }

// Open decrypts what Seal made for key; an object that is not sealed is
// returned as it is.
func (k *Keyring) Open(key string, b []byte) ([]byte, error) {
	if !sealed(b) {
		return b, nil
	}
	return k.open(key, b)
}
