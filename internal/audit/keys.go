package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// DefaultKeyName names the signing key gateway audit keygen makes.
const DefaultKeyName = "patientmsg-audit"

// GenerateKey makes a signing key and its verifier key, in note's formats
// ("PRIVATE+KEY+<name>+<hash>+<key>" and "<name>+<hash>+<key>").
func GenerateKey(name string) (skey, vkey string, err error) {
	if name == "" {
		name = DefaultKeyName
	}
	return note.GenerateKey(rand.Reader, name)
}

// VerifierKey is the verifier key of a signing key.
func VerifierKey(skey string) (string, error) {
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("not a signing key: %w", err)
	}
	parts := strings.SplitN(skey, "+", 5) // the key's base64 may hold "+"
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an Ed25519 signing key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// NewSigner reads a signing key (GATEWAY_AUDIT_SIGNING_KEY).
func NewSigner(skey string) (note.Signer, error) {
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, fmt.Errorf("not a signing key (make one with gateway audit keygen): %w", err)
	}
	return s, nil
}

// NewVerifiers reads verifier keys.
func NewVerifiers(vkeys ...string) (note.Verifiers, error) {
	var vs []note.Verifier
	for _, k := range vkeys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("not a verifier key: %w", err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, errors.New("no verifier key")
	}
	return note.VerifierList(vs...), nil
}

// Checkpoint is a signed statement of a tenant's tree: its size and root
// hash.
type Checkpoint struct {
	Tenant string
	Tree   tlog.Tree
}

// origin is the first line of a tenant's checkpoints: a checkpoint of one
// tenant cannot stand for another's.
func origin(tenant string) string { return DefaultKeyName + "/" + tenant }

// text is the checkpoint's note text.
func (c Checkpoint) text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin(c.Tenant), c.Tree.N, base64.StdEncoding.EncodeToString(c.Tree.Hash[:]))
}

// Sign signs a checkpoint.
func (c Checkpoint) Sign(s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.text()}, s)
}

// OpenCheckpoint checks a signed checkpoint of tenant against the trusted
// verifiers and reads it.
func OpenCheckpoint(msg []byte, tenant string, trusted note.Verifiers) (Checkpoint, error) {
	n, err := note.Open(msg, trusted)
	if err != nil {
		return Checkpoint{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[0] != origin(tenant) || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("not a checkpoint of tenant %s", tenant)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return Checkpoint{}, errors.New("a checkpoint with a bad size")
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return Checkpoint{}, errors.New("a checkpoint with a bad hash")
	}
	c := Checkpoint{Tenant: tenant, Tree: tlog.Tree{N: size}}
	copy(c.Tree.Hash[:], raw)
	return c, nil
}
