package main

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	weftColor   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	kernelColor = color.RGBA{R: 0xa0, G: 0xa0, B: 0xa0, A: 0xff}
)

// panel is one chart: a bar per system for each test, with min–max bars.
type panel struct {
	title, unit string
	tests       []string
	weft, kern  []stat
	scale       float64 // divides every value (pps -> kpps)
}

// rangeBars are the min–max whiskers of one system's bars.
type rangeBars struct {
	x     []float64
	stats []stat
	scale float64
}

func (r rangeBars) Len() int                    { return len(r.x) }
func (r rangeBars) XY(i int) (float64, float64) { return r.x[i], r.stats[i].Median / r.scale }
func (r rangeBars) YError(i int) (float64, float64) {
	s := r.stats[i]
	return (s.Median - s.Min) / r.scale, (s.Max - s.Median) / r.scale
}

func (p panel) plot() (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = p.title
	pl.Y.Label.Text = p.unit
	pl.Y.Min = 0
	pl.Legend.Top = true
	const shift = 0.2 // data units either side of each test's tick
	for _, sys := range []struct {
		name  string
		stats []stat
		col   color.Color
		dx    float64
	}{{"weft", p.weft, weftColor, -shift}, {"kernel VXLAN", p.kern, kernelColor, shift}} {
		vals := make(plotter.Values, len(p.tests))
		var ok []stat
		var xs []float64
		for i, s := range sys.stats {
			if s.Valid() {
				vals[i] = s.Median / p.scale
				ok = append(ok, s)
				xs = append(xs, float64(i)+sys.dx)
			}
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(34))
		if err != nil {
			return nil, err
		}
		bars.XMin = sys.dx
		bars.Color = sys.col
		bars.LineStyle.Width = 0
		pl.Add(bars)
		pl.Legend.Add(sys.name, bars)
		if len(ok) > 0 {
			eb, err := plotter.NewYErrorBars(rangeBars{x: xs, stats: ok, scale: p.scale})
			if err != nil {
				return nil, err
			}
			eb.LineStyle.Width = vg.Points(1)
			pl.Add(eb)
		}
	}
	// Room above the tallest bar for the legend.
	top := 0.0
	for _, st := range append(append([]stat{}, p.weft...), p.kern...) {
		if st.Valid() {
			top = max(top, st.Max/p.scale)
		}
	}
	if top > 0 {
		pl.Y.Max = top * 1.3
	}
	pl.NominalX(p.tests...)
	pl.X.Min, pl.X.Max = -0.6, float64(len(p.tests))-0.4
	return pl, nil
}

// writeChart draws throughput (and latency) by system and test into an SVG,
// or a PNG if path ends in .png.
func writeChart(path string, s *summary) error {
	var k, ksvc kernelResult
	if s.KernelRes != nil {
		k = *s.KernelRes
	}
	if s.KernelSvcRes != nil {
		ksvc = *s.KernelSvcRes
	}
	w := s.Weft
	panels := []panel{
		{title: "TCP throughput", unit: "Gbit/s", tests: []string{"1 stream", "1 via cluster IP", "4 streams"},
			weft: []stat{w.TCP1, w.Svc1, w.TCP4}, kern: []stat{k.TCP1, ksvc.TCP1, k.TCP4}, scale: 1},
		{title: "UDP 64 B received", unit: "thousand packets/s", tests: []string{"64 B"},
			weft: []stat{w.UDP}, kern: []stat{k.UDP}, scale: 1000},
		{title: "ping round trip", unit: "ms (avg)", tests: []string{"avg"},
			weft: []stat{w.PingAvg}, kern: []stat{k.Ping}, scale: 1},
	}
	row := make([]*plot.Plot, len(panels))
	for i, p := range panels {
		pl, err := p.plot()
		if err != nil {
			return fmt.Errorf("chart %s: %w", p.title, err)
		}
		row[i] = pl
	}
	width, height := 11*vg.Inch, 4*vg.Inch
	var img interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if strings.HasSuffix(path, ".png") {
		c := vgimg.New(width, height)
		img = vgimg.PngCanvas{Canvas: c}
	} else {
		img = vgsvg.New(width, height)
	}
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, pl := range row {
		pl.Draw(canvases[0][i])
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
