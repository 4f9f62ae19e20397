package users

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters.
type Params struct {
	// Memory in KiB, Time in passes over it, Threads in lanes.
	Memory  uint32
	Time    uint32
	Threads uint8
}

// DefaultParams are RFC 9106's second recommended option (64 MiB, three
// passes) with two lanes: about a tenth of a second on one core of a
// small server. Stored hashes carry their own parameters, so raising these
// re-hashes each password at its owner's next sign-in.
var DefaultParams = Params{Memory: 64 * 1024, Time: 3, Threads: 2}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen and MaxPasswordLen bound a password (in characters
	// and bytes): long enough to resist guessing, short enough that
	// hashing it costs what the parameters say.
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

// errBadHash: a stored hash is not one HashPassword writes.
var errBadHash = errors.New("users: not an argon2id hash")

// HashPassword returns the PHC-style encoding of password's argon2id hash
// with a fresh random salt:
//
//	$argon2id$v=19$m=65536,t=3,p=2$<salt, base64>$<hash, base64>
func HashPassword(password string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches an encoded hash,
// comparing in constant time; an encoding it cannot read never matches.
func VerifyPassword(password, encoded string) bool {
	p, salt, key, err := decodeHash(encoded)
	if err != nil {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1
}

// maxDecodedMemory bounds the memory a stored hash may ask for (1 GiB), so
// that a damaged record cannot make a sign-in allocate without limit.
const maxDecodedMemory = 1 << 20

// decodeHash reads a hash HashPassword wrote.
func decodeHash(encoded string) (p Params, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, errBadHash
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, perr := strconv.ParseUint(v, 10, 32)
		if !ok || perr != nil || n == 0 {
			return p, nil, nil, errBadHash
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errBadHash
			}
			p.Threads = uint8(n)
		default:
			return p, nil, nil, errBadHash
		}
	}
	if p.Memory == 0 || p.Time == 0 || p.Threads == 0 || p.Memory > maxDecodedMemory || p.Time > 64 || p.Memory < 8*uint32(p.Threads) {
		return p, nil, nil, errBadHash
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, errBadHash
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}

// needsRehash reports whether an encoded hash was made with other
// parameters than p.
func needsRehash(encoded string, p Params) bool {
	got, _, _, err := decodeHash(encoded)
	return err != nil || got != p
}

// passwordAlphabet leaves out look-alikes (0/O, 1/l/I) so that a
// generated password can be read out and typed.
const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// GeneratePassword returns a random password of five groups of four
// characters (about 117 bits), e.g. "h7Tq-4mZx-…".
func GeneratePassword() (string, error) {
	var b strings.Builder
	max := big.NewInt(int64(len(passwordAlphabet)))
	for i := range 20 {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b.WriteByte(passwordAlphabet[n.Int64()])
	}
	return b.String(), nil
}
