package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"gocloud.dev/blob"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyOptions select what Verify checks.
type VerifyOptions struct {
	// Tenant is the one tenant to check ("" for every tenant exported).
	Tenant string
	// From and To bound the record indexes checked: From ≤ index < To
	// (To 0: to the end).
	From, To int64
}

// Finding is the first thing Verify found wrong: a record (Index ≥ 0)
// or a checkpoint or object (Index -1).
type Finding struct {
	Tenant string
	Index  int64
	Reason string
}

func (f *Finding) String() string {
	if f.Index >= 0 {
		return fmt.Sprintf("tenant %s: record %d: %s", f.Tenant, f.Index, f.Reason)
	}
	return fmt.Sprintf("tenant %s: %s", f.Tenant, f.Reason)
}

// Report is what Verify checked.
type Report struct {
	Tenants     int
	Checkpoints int
	// Checked is how many records were proved against a checkpoint.
	Checked int64
	// Uncovered is how many records in the range no checkpoint covers yet
	// (exported after the last checkpoint, or not exported).
	Uncovered int64
	// Finding is the first record or checkpoint that does not match; nil
	// when everything checked does.
	Finding *Finding
}

// Verify reads the exported records, tree hashes and checkpoints of the
// blob store and proves every record in the range against the newest
// checkpoint signed by a trusted key (tlog.ProveRecord, CheckRecord):
// a record changed, removed or moved since its export is found. Each
// checkpoint's tree must also be the one the exported hashes make. An
// error is a failure to read; what does not match is the Finding.
func Verify(ctx context.Context, b *blob.Bucket, trusted note.Verifiers, o VerifyOptions) (Report, error) {
	var r Report
	tenants := []string{o.Tenant}
	if o.Tenant == "" {
		var err error
		if tenants, err = listTenants(ctx, b); err != nil {
			return r, err
		}
	}
	for _, t := range tenants {
		r.Tenants++
		if err := verifyTenant(ctx, b, trusted, t, o, &r); err != nil || r.Finding != nil {
			return r, err
		}
	}
	return r, nil
}

func listTenants(ctx context.Context, b *blob.Bucket) ([]string, error) {
	var out []string
	it := b.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if obj.IsDir {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), "/"))
		}
	}
}

// segment is one exported batch: records [from, to).
type segment struct {
	from, to int64
	hashes   []byte // loaded when a proof needs them
}

type tenantArchive struct {
	ctx    context.Context
	b      *blob.Bucket
	tenant string
	segs   []*segment
}

func verifyTenant(ctx context.Context, b *blob.Bucket, trusted note.Verifiers, tenant string, o VerifyOptions, r *Report) error {
	find := func(index int64, format string, a ...any) error {
		r.Finding = &Finding{Tenant: tenant, Index: index, Reason: fmt.Sprintf(format, a...)}
		return nil
	}
	// Checkpoints: each signed by a trusted key, for this tenant.
	names, err := list(ctx, b, prefix+tenant+"/checkpoints/")
	if err != nil {
		return err
	}
	var cps []Checkpoint
	for _, name := range names {
		n, ok := parseIndex(name, "")
		if !ok {
			return find(-1, "checkpoint object %s is not named by a tree size", name)
		}
		msg, err := b.ReadAll(ctx, checkpointObject(tenant, n))
		if err != nil {
			return err
		}
		cp, err := OpenCheckpoint(msg, tenant, trusted)
		if err != nil {
			return find(-1, "checkpoint %d is refused: %v", n, err)
		}
		if cp.Tree.N != n {
			return find(-1, "checkpoint object %d holds a tree of size %d", n, cp.Tree.N)
		}
		cps = append(cps, cp)
	}
	r.Checkpoints += len(cps)
	// Batches: record and hash objects from the same indexes, one after
	// the other from 0.
	recNames, err := list(ctx, b, prefix+tenant+"/records/")
	if err != nil {
		return err
	}
	hashNames, err := list(ctx, b, prefix+tenant+"/hashes/")
	if err != nil {
		return err
	}
	a := &tenantArchive{ctx: ctx, b: b, tenant: tenant}
	hasRecords := map[int64]bool{}
	for _, name := range recNames {
		from, ok := parseIndex(name, ".jsonl")
		if !ok {
			return find(-1, "record object %s is not named by an index", name)
		}
		hasRecords[from] = true
	}
	end := int64(0)
	for _, name := range hashNames {
		from, ok := parseIndex(name, ".bin")
		if !ok {
			return find(-1, "hash object %s is not named by an index", name)
		}
		if from != end {
			return find(end, "records %d to %d are missing, with their tree hashes", end, from-1)
		}
		attrs, err := b.Attributes(ctx, hashesObject(tenant, from))
		if err != nil {
			return err
		}
		to, ok := batchEnd(from, attrs.Size)
		if !ok {
			return find(from, "the tree hashes of the records from %d are cut short", from)
		}
		if !hasRecords[from] {
			return find(from, "records %d to %d are missing", from, to-1)
		}
		delete(hasRecords, from)
		a.segs = append(a.segs, &segment{from: from, to: to})
		end = to
	}
	for from := range hasRecords {
		return find(from, "the tree hashes of the records from %d are missing", from)
	}
	// Every checkpoint's tree is the one the exported hashes make.
	var latest *Checkpoint
	for i := range cps {
		cp := &cps[i]
		if cp.Tree.N > end {
			return find(end, "checkpoint %d covers it, but the export ends before it", cp.Tree.N)
		}
		th, err := tlog.TreeHash(cp.Tree.N, a)
		if err != nil {
			return err
		}
		if th != cp.Tree.Hash {
			return find(-1, "checkpoint %d does not match the exported tree hashes", cp.Tree.N)
		}
		if latest == nil || cp.Tree.N > latest.Tree.N {
			latest = cp
		}
	}
	// Every record in the range, proved against the latest checkpoint.
	to := end
	if o.To > 0 {
		to = min(o.To, end)
	}
	covered := int64(0)
	if latest != nil {
		covered = latest.Tree.N
	}
	if o.To > end {
		r.Uncovered += o.To - max(end, o.From)
	}
	for _, s := range a.segs {
		if s.to <= o.From || s.from >= to {
			continue
		}
		data, err := b.ReadAll(ctx, recordsObject(tenant, s.from))
		if err != nil {
			return err
		}
		lines := splitLines(data)
		if int64(len(lines)) != s.to-s.from {
			return find(s.from+min(int64(len(lines)), s.to-s.from), "the record object from %d holds %d records, not %d", s.from, len(lines), s.to-s.from)
		}
		for i, rec := range lines {
			n := s.from + int64(i)
			if n < o.From || n >= to {
				continue
			}
			if n >= covered {
				r.Uncovered++
				continue
			}
			leaf, err := a.ReadHashes([]int64{tlog.StoredHashIndex(0, n)})
			if err != nil {
				return err
			}
			h := tlog.RecordHash(rec)
			if h != leaf[0] {
				return find(n, "its content is not the one the log recorded (its hash differs from the tree's)")
			}
			proof, err := tlog.ProveRecord(latest.Tree.N, n, a)
			if err != nil {
				return err
			}
			if err := tlog.CheckRecord(proof, latest.Tree.N, latest.Tree.Hash, n, h); err != nil {
				return find(n, "it is not in the tree of checkpoint %d: %v", latest.Tree.N, err)
			}
			if e, err := Decode(rec); err != nil || e.Index != n || e.Tenant != tenant {
				return find(n, "it does not name its own index and tenant")
			}
			r.Checked++
		}
	}
	return nil
}

// batchEnd is the end of the batch of records from "from" whose stored
// tree hashes take size bytes.
func batchEnd(from, size int64) (int64, bool) {
	if size <= 0 || size%tlog.HashSize != 0 {
		return 0, false
	}
	want := tlog.StoredHashCount(from) + size/tlog.HashSize
	to := from + int64(sort.Search(int(size/tlog.HashSize)+1, func(k int) bool { return tlog.StoredHashCount(from+int64(k)) >= want }))
	return to, tlog.StoredHashCount(to) == want
}

// ReadHashes reads stored tree hashes from the exported hash objects
// (tlog.HashReader), loading an object the first time it is needed.
func (a *tenantArchive) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	if len(a.segs) == 0 && len(indexes) > 0 {
		return nil, errors.New("no tree hash is exported")
	}
	for i, x := range indexes {
		// The record whose append stored hash x.
		n := int64(sort.Search(int(a.segs[len(a.segs)-1].to), func(n int) bool { return tlog.StoredHashCount(int64(n)+1) > x }))
		j := sort.Search(len(a.segs), func(j int) bool { return a.segs[j].to > n })
		if j == len(a.segs) {
			return nil, fmt.Errorf("tree hash %d is not exported", x)
		}
		s := a.segs[j]
		if s.hashes == nil {
			data, err := a.b.ReadAll(a.ctx, hashesObject(a.tenant, s.from))
			if err != nil {
				return nil, err
			}
			s.hashes = data
		}
		off := (x - tlog.StoredHashCount(s.from)) * tlog.HashSize
		if off < 0 || off+tlog.HashSize > int64(len(s.hashes)) {
			return nil, fmt.Errorf("tree hash %d is not exported", x)
		}
		copy(out[i][:], s.hashes[off:off+tlog.HashSize])
	}
	return out, nil
}

// list names the objects under a prefix, in order.
func list(ctx context.Context, b *blob.Bucket, pfx string) ([]string, error) {
	var out []string
	it := b.List(&blob.ListOptions{Prefix: pfx})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			sort.Strings(out)
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if !obj.IsDir {
			out = append(out, path.Base(obj.Key))
		}
	}
}
