package bundle

import (
	"archive/zip"
	"io"
	"time"

	"github.com/klauspost/compress/flate"
)

// newZipWriter is a zip writer on w that deflates at klauspost/compress's
// fastest level: it stores what does not compress (random data, media,
// archives) at close to copy speed, where archive/zip's default level
// spends seconds on it, and still shrinks text several times.
func newZipWriter(w io.Writer) *zip.Writer {
	z := zip.NewWriter(w)
	z.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, flate.BestSpeed)
	})
	return z
}

// openZip opens the zip at src, inflating with klauspost/compress, about
// twice as fast as compress/flate.
func openZip(src string) (*zip.ReadCloser, error) {
	r, err := zip.OpenReader(src)
	if err != nil {
		return nil, err
	}
	r.RegisterDecompressor(zip.Deflate, flate.NewReader)
	return r, nil
}

// epoch is the time every packed entry says it was modified: zip's
// earliest, so that the same files always pack to the same bytes (and
// the file store keeps them once).
var epoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
