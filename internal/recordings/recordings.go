// Package recordings keeps call recordings in the blob store
// (gocloud.dev/blob: file:// by default, s3:// in production), under
// recordings/<tenant>/<message id>/<recording sid><ext>, and deletes them
// after their retention.
package recordings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets
	"gocloud.dev/gcerrors"
)

// ErrNotFound is returned for a recording the store does not have.
var ErrNotFound = errors.New("recording not found")

// MaxSize bounds one recording (Twilio recordings are at most a few MB at
// the lengths a follow-up call asks for).
const MaxSize = 64 << 20

// Store is a bucket of recordings.
type Store struct {
	b *blob.Bucket
	// Keys seal new recordings and open sealed ones (nil: stored as
	// they are; sealed ones cannot be read).
	Keys *Keyring
}

// Open opens the bucket at url (BLOB_URL).
func Open(ctx context.Context, url string) (*Store, error) {
	b, err := blob.OpenBucket(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("BLOB_URL: %w", err)
	}
	return &Store{b: b}, nil
}

// Close releases the bucket.
func (s *Store) Close() error { return s.b.Close() }

// Key is where a recording is kept.
func Key(tenant, messageID, recordingSID, contentType string) string {
	ext := ".bin"
	switch contentType {
	case "audio/mpeg":
		ext = ".mp3"
	case "audio/wav", "audio/x-wav":
		ext = ".wav"
	}
	return "recordings/" + tenant + "/" + messageID + "/" + recordingSID + ext
}

// Put stores a recording and returns its size; with Keys, sealed.
func (s *Store) Put(ctx context.Context, key, contentType string, r io.Reader) (int64, error) {
	if s.Keys != nil {
		plain, err := readAll(r)
		if err != nil {
			return 0, err
		}
		err = s.b.WriteAll(ctx, key, s.Keys.seal(key, plain), &blob.WriterOptions{ContentType: "application/octet-stream",
			Metadata: map[string]string{"key-id": s.Keys.Current(), "content-type": contentType}})
		return int64(len(plain)), err
	}
	w, err := s.b.NewWriter(ctx, key, &blob.WriterOptions{ContentType: contentType})
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(w, io.LimitReader(r, MaxSize+1))
	if err == nil && n > MaxSize {
		err = fmt.Errorf("recording larger than %d bytes", MaxSize)
	}
	if err != nil {
		_ = w.Close()
		_ = s.b.Delete(context.WithoutCancel(ctx), key)
		return 0, err
	}
	return n, w.Close()
}

// Open reads a recording, opening a sealed one.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	r, err := s.b.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	head := make([]byte, len(sealedMagic))
	n, _ := io.ReadFull(r, head)
	if !sealed(head[:n]) {
		// Stored before encryption was on: as it is.
		return readCloser{io.MultiReader(bytes.NewReader(head[:n]), r), r}, r.Size(), nil
	}
	rest, err := readAll(r)
	r.Close()
	if err != nil {
		return nil, 0, err
	}
	plain, err := s.Keys.open(key, append(head, rest...))
	if err != nil {
		return nil, 0, err
	}
	return io.NopCloser(bytes.NewReader(plain)), int64(len(plain)), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Sweep deletes recordings stored more than retention ago and returns how
// many it deleted. Several workers may sweep at once: deletes are idempotent.
func (s *Store) Sweep(ctx context.Context, retention time.Duration, now time.Time) (int, error) {
	return s.SweepEach(ctx, func(string) time.Duration { return retention }, now)
}

// SweepEach is Sweep with each tenant's own retention (its recordings are
// under recordings/<tenant>/).
func (s *Store) SweepEach(ctx context.Context, retentionOf func(tenant string) time.Duration, now time.Time) (int, error) {
	cutoffs := map[string]time.Time{}
	it := s.b.List(&blob.ListOptions{Prefix: "recordings/"})
	n := 0
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if obj.IsDir || !strings.HasPrefix(obj.Key, "recordings/") {
			continue
		}
		tenant, _, _ := strings.Cut(strings.TrimPrefix(obj.Key, "recordings/"), "/")
		cutoff, ok := cutoffs[tenant]
		if !ok {
			cutoff = now.Add(-retentionOf(tenant))
			cutoffs[tenant] = cutoff
		}
		if !obj.ModTime.Before(cutoff) {
			continue
		}
		if err := s.b.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return n, err
		}
		n++
	}
}

// Delete removes a recording; one that is gone already is no error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.b.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return err
	}
	return nil
}

// EraseMessage deletes every recording of a tenant's message (an erasure
// of its recipient), linked to the message or not, and returns how many
// it deleted.
func (s *Store) EraseMessage(ctx context.Context, tenant, messageID string) (int, error) {
	it := s.b.List(&blob.ListOptions{Prefix: "recordings/" + tenant + "/" + messageID + "/"})
	n := 0
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if obj.IsDir {
			continue
		}
		if err := s.Delete(ctx, obj.Key); err != nil {
			return n, err
		}
		n++
	}
}
