package gateway

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/gateway/console"
)

// readBody bounds every request body before any handler reads it.
//
// Fiber's c.Body() inflates a body by every layer its Content-Encoding
// lists, with no bound: the body limit covers the bytes on the wire only, so
// a 2 KB "gzip, gzip" body becomes a gigabyte in memory. Here a body is
// inflated at most once (stacked and unknown encodings are refused with
// 415), as a stream that stops one byte past the route's own limit (413),
// and routes whose senders never compress (the providers' webhooks) inflate
// nothing at all. The inflated body replaces the raw one and the
// Content-Encoding header goes, so nothing downstream (c.Body, multipart
// parsing) inflates it again.
func (s *Server) readBody(c *fiber.Ctx) error {
	limit := s.bodyLimit(c)
	raw := c.Request().Body()
	if len(raw) > limit {
		return tooLarge(limit)
	}
	var encodings []string
	c.Request().Header.VisitAll(func(k, v []byte) {
		if strings.EqualFold(string(k), fiber.HeaderContentEncoding) {
			encodings = append(encodings, string(v))
		}
	})
	if len(encodings) == 0 {
		return c.Next()
	}
	if !strings.HasPrefix(c.Path(), "/v1/") {
		// Twilio and WeChat never compress what they post.
		if codings(strings.Join(encodings, ",")) != nil {
			return problem(415, "unsupported-encoding", "this endpoint does not accept a compressed body; send it without Content-Encoding")
		}
	} else {
		body, p := inflate(strings.Join(encodings, ","), raw, limit)
		if p != nil {
			return p
		}
		if body != nil {
			c.Request().SetBodyRaw(body)
		}
	}
	c.Request().Header.Del(fiber.HeaderContentEncoding)
	return c.Next()
}

// bodyLimit is the largest body the route takes, inflated or not: the
// audience upload (the API's or the console's) takes GATEWAY_MAX_UPLOAD_BYTES, everything else
// GATEWAY_MAX_REQUEST_BYTES.
func (s *Server) bodyLimit(c *fiber.Ctx) int {
	if c.Method() == fiber.MethodPost && c.Path() == "/v1/audiences" || console.IsUpload(c.Method(), c.Path()) {
		return s.opts.MaxUploadBytes
	}
	return s.opts.MaxRequestBytes
}

func tooLarge(limit int) *Problem {
	return problem(413, "too-large", fmt.Sprintf("the request body is larger than this endpoint accepts (%d bytes, inflated)", limit))
}

// codings lists a Content-Encoding header's codings in the order they were
// applied, lower-cased, without "identity" (which changes nothing).
func codings(header string) []string {
	var out []string
	for _, c := range strings.Split(header, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if c != "" && c != "identity" {
			out = append(out, c)
		}
	}
	return out
}

// inflate undoes the Content-Encoding header of raw into at most limit
// bytes. It returns nil and no problem when the header names no coding.
// One coding is accepted (gzip, deflate or br); stacked or unknown codings
// are refused with 415, a body that inflates past limit with 413 as soon as
// the limit is passed, a corrupt stream with 400.
func inflate(header string, raw []byte, limit int) ([]byte, *Problem) {
	cs := codings(header)
	switch {
	case len(cs) == 0:
		return nil, nil
	case len(cs) > 1:
		return nil, problem(415, "unsupported-encoding", "the body is compressed more than once ("+strings.Join(cs, ", ")+"); send it compressed once, with gzip, deflate or br")
	}
	var (
		r   io.Reader
		err error
	)
	src := bytes.NewReader(raw)
	switch cs[0] {
	case "gzip", "x-gzip":
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(src); err == nil {
			r = zr
		}
	case "deflate":
		// HTTP's "deflate" is the zlib format (RFC 9110, section 8.4.1.2).
		r, err = zlib.NewReader(src)
	case "br":
		if brotliWindowBits(raw) > maxBrotliWindowBits {
			return nil, problem(415, "unsupported-encoding", "the br body asks for a window over 4 MiB; compress it with a window of at most 4 MiB (lgwin 22, the encoder's default)")
		}
		r = brotli.NewReader(src)
	default:
		return nil, problem(415, "unsupported-encoding", fmt.Sprintf("the Content-Encoding %q is not supported; send the body uncompressed or with gzip, deflate or br", cs[0]))
	}
	if err != nil {
		return nil, corrupt(cs[0])
	}
	body, err := readAtMost(r, limit)
	switch {
	case errors.Is(err, errTooLarge):
		return nil, tooLarge(limit)
	case err != nil:
		return nil, corrupt(cs[0])
	}
	return body, nil
}

var errTooLarge = errors.New("body over the limit")

// readAtMost reads r to its end into one slice of its exact size, or fails
// with errTooLarge as soon as it yields more than limit bytes. It reads in
// chunks, so a refused body costs at most limit bytes (a growing buffer
// would cost twice that), and one accepted costs twice its size.
func readAtMost(r io.Reader, limit int) ([]byte, error) {
	const chunk = 256 << 10
	var (
		chunks [][]byte
		total  int
	)
	for {
		b := make([]byte, min(chunk, limit+1-total))
		n := 0
		var err error
		for n < len(b) && err == nil {
			var k int
			k, err = r.Read(b[n:])
			n += k
		}
		total += n
		if n > 0 {
			chunks = append(chunks, b[:n])
		}
		switch {
		case total > limit:
			return nil, errTooLarge
		case errors.Is(err, io.EOF):
			return bytes.Join(chunks, nil), nil
		case err != nil:
			return nil, err
		}
	}
}

// maxBrotliWindowBits caps the window a br body may ask for (4 MiB, the
// encoders' default): the decoder allocates the whole window up front, up
// to 16 MiB, for a body of a few bytes.
const maxBrotliWindowBits = 22

// brotliWindowBits reads the window size (WBITS) from a brotli stream's
// first bits (RFC 7932, section 9.1). It returns 0 for an empty stream and
// 30 for the large-window extension.
func brotliWindowBits(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	x := uint(b[0])
	if x&1 == 0 {
		return 16
	}
	if n := (x >> 1) & 7; n != 0 {
		return 17 + int(n)
	}
	switch n := (x >> 4) & 7; n {
	case 0:
		return 17
	case 1:
		return 30 // the large-window extension: up to 1 GiB
	default:
		return 8 + int(n)
	}
}

func corrupt(coding string) *Problem {
	return problem(400, "malformed-body", "the body is not valid "+coding+" data, as its Content-Encoding says")
}
