package figures

import (
	"testing"
	"time"
)

// The names and values Report gives are what bench/report reads.
func TestReport(t *testing.T) {
	tests := []struct {
		name   string
		rounds []float64
		want   map[string]float64
	}{
		{"one round", []float64{4}, map[string]float64{"x": 4}},
		{"median and extremes", []float64{9, 1, 5, 3, 7}, map[string]float64{"x": 5, "x-min": 1, "x-max": 9}},
		{"even count takes the upper middle", []float64{4, 1, 3, 2}, map[string]float64{"x": 3, "x-min": 1, "x-max": 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Rounds{}
			for _, v := range tt.rounds {
				r.Add("x", v)
			}
			res := testing.Benchmark(func(b *testing.B) { r.Report(b) })
			if len(res.Extra) != len(tt.want) {
				t.Fatalf("reported %v, want %v", res.Extra, tt.want)
			}
			for k, v := range tt.want {
				if got, ok := res.Extra[k]; !ok || got != v {
					t.Errorf("%s = %v (reported: %v), want %v", k, got, ok, v)
				}
			}
			if tt.rounds[0] != r["x"][0] {
				t.Errorf("Report reordered the rounds: %v", r["x"])
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	d := []time.Duration{50, 10, 40, 20, 30, 60, 70, 80, 90, 100}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0, 10}, {.5, 60}, {.99, 100}, {1, 100}}
	for _, tt := range tests {
		if got := Quantile(d, tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if d[0] != 50 {
		t.Errorf("Quantile sorted its input: %v", d)
	}
}

func TestEnvInt(t *testing.T) {
	tests := []struct {
		env  string
		want int
	}{{"", 7}, {"12", 12}, {"0", 7}, {"-3", 7}, {"x", 7}}
	for _, tt := range tests {
		t.Setenv("SLUICE_FIGURES_TEST", tt.env)
		if got := EnvInt("SLUICE_FIGURES_TEST", 7); got != tt.want {
			t.Errorf("EnvInt with %q = %d, want %d", tt.env, got, tt.want)
		}
	}
}
