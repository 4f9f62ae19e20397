package smtpsim

import "testing"

// FuzzParse: whatever a client sends as DATA, recording it never panics
// and keeps the raw bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Subject: hi\r\n\r\nbody\r\n"))
	f.Add([]byte("Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Add([]byte("Subject: =?UTF-8?B?5L2g5aW9?=\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9=\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec := Received{Raw: raw}
		parse(&rec)
		if string(rec.Raw) != string(raw) {
			t.Fatal("parse changed Raw")
		}
	})
}
