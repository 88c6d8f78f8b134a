//! HTML for the console and the payment page: escaping, the page frame, tables and the inline
//! SVG charts. Everything that came from data goes through [`esc`]; charts are drawn with
//! integer arithmetic (the workspace forbids float arithmetic).

use std::fmt::Write as _;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string or path component.
pub fn url_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The console's sections: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/console", "Dashboard"),
    ("/console/jobs", "Error queue"),
    ("/console/review", "Review queue"),
    ("/console/payments", "Payments"),
    ("/console/reconciliation", "Reconciliation"),
    ("/console/ledger", "Ledger"),
    ("/console/audit", "Audit trail"),
];

/// Who is looking, for the page frame.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
}

/// A whole console page: skip link, navigation, the user and logout, then `body`.
pub fn page(title: &str, active: &str, viewer: Option<Viewer<'_>>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(v) = viewer {
        nav.push_str("<nav aria-label=\"Console\"><ul>");
        for (href, label) in NAV {
            let current = if *href == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        let _ = write!(
            nav,
            "</ul><form method=\"post\" action=\"/console/logout\" class=\"logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"who\">{} <span class=\"role\">({})</span></span> \
             <button type=\"submit\">Log out</button></form></nav>",
            esc(v.csrf),
            esc(v.name),
            esc(v.role)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · cashloop</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><span class=\"brand\">cashloop</span>{nav}</header>\
         <main id=\"main\" tabindex=\"-1\"><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    )
}

/// A table with a caption and column headers (`scope="col"`); `rows` are already-escaped
/// cells, the first of each row a row header (`scope="row"`).
pub fn table(caption: &str, headers: &[&str], rows: &[Vec<String>], id: &str) -> String {
    let mut out = format!(
        "<div class=\"table-wrap\"><table id=\"{}\"><caption>{}</caption><thead><tr>",
        esc(id),
        esc(caption)
    );
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">Nothing to show.</td></tr>",
            headers.len().max(1)
        );
    }
    for r in rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{c}</th>");
            } else {
                let _ = write!(out, "<td>{c}</td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A status message (`role="status"`) or an error (`role="alert"`).
pub fn notice(text: &str, error: bool) -> String {
    if error {
        format!("<p class=\"notice error\" role=\"alert\">{}</p>", esc(text))
    } else {
        format!("<p class=\"notice\" role=\"status\">{}</p>", esc(text))
    }
}

/// Series colours (readable on white, distinguishable without colour by their labels).
const COLOURS: &[&str] = &[
    "#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#4b5563",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// A line chart over equally spaced samples: `series` are (name, values); `x_labels` name the
/// first and last sample. The SVG has a title and description, and a table follows it for
/// people who would rather read.
pub fn line_chart(
    id: &str,
    title: &str,
    unit: &str,
    series: &[(String, Vec<u64>)],
    x_labels: (&str, &str),
) -> String {
    const W: u64 = 640;
    const H: u64 = 200;
    const PAD_L: u64 = 56;
    const PAD_B: u64 = 24;
    const PAD_T: u64 = 10;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let points = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let plot_w = W - PAD_L - 8;
    let plot_h = H - PAD_T - PAD_B;
    let mut svg = format!(
        "<figure class=\"chart\"><svg id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\" \
         viewBox=\"0 0 {W} {H}\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\">\
         <title id=\"{id}-t\">{t}</title><desc id=\"{id}-d\">{n} series over {points} samples; \
         highest value {max} {u}</desc>\
         <line x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{yb}\" stroke=\"#888\"/>\
         <line x1=\"{PAD_L}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#888\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"11\">{max}</text>\
         <text x=\"{lx}\" y=\"{yb}\" text-anchor=\"end\" font-size=\"11\">0</text>\
         <text x=\"{PAD_L}\" y=\"{H}\" font-size=\"11\" dy=\"-4\">{x0}</text>\
         <text x=\"{xr}\" y=\"{H}\" font-size=\"11\" dy=\"-4\" text-anchor=\"end\">{x1}</text>",
        id = esc(id),
        t = esc(title),
        n = series.len(),
        u = esc(unit),
        yb = PAD_T + plot_h,
        xr = PAD_L + plot_w,
        lx = PAD_L - 4,
        ty = PAD_T + 10,
        x0 = esc(x_labels.0),
        x1 = esc(x_labels.1),
    );
    let steps = (points.max(2) - 1) as u64;
    for (i, (name, values)) in series.iter().enumerate() {
        let mut d = String::new();
        let mut dots = String::new();
        for (j, v) in values.iter().enumerate() {
            // A lone sample is the latest: it sits at "now", on the right.
            let x = if points <= 1 {
                PAD_L + plot_w
            } else {
                PAD_L + plot_w * j as u64 / steps
            };
            let y = PAD_T + plot_h - plot_h * (*v).min(max) / max;
            let _ = write!(d, "{}{x},{y}", if j == 0 { "M" } else { " L" });
            // Points are marked while there are few of them (a single one draws no line).
            if values.len() <= 60 {
                let _ = write!(
                    dots,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{}\"/>",
                    colour(i)
                );
            }
        }
        svg.push_str(&dots);
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"><title>{}</title></path>",
            colour(i),
            esc(name)
        );
    }
    svg.push_str("</svg><figcaption>");
    let _ = write!(svg, "{} ({})", esc(title), esc(unit));
    svg.push_str("<ul class=\"legend\">");
    for (i, (name, values)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {} — latest {}</li>",
            colour(i),
            esc(name),
            values.last().copied().unwrap_or(0)
        );
    }
    svg.push_str("</ul></figcaption></figure>");
    svg
}

/// Stacked horizontal bars: one bar per row (label, [(category, count)]).
pub fn stacked_bars(id: &str, title: &str, rows: &[(String, Vec<(String, u64)>)]) -> String {
    const W: u64 = 640;
    const ROW_H: u64 = 22;
    const LABEL_W: u64 = 120;
    let mut categories: Vec<String> = Vec::new();
    for (_, parts) in rows {
        for (c, _) in parts {
            if !categories.contains(c) {
                categories.push(c.clone());
            }
        }
    }
    let max = rows
        .iter()
        .map(|(_, p)| p.iter().map(|(_, n)| *n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let h = ROW_H * rows.len().max(1) as u64 + 4;
    let mut svg = format!(
        "<figure class=\"chart\"><svg id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t\" viewBox=\"0 0 {W} {h}\" width=\"100%\">\
         <title id=\"{id}-t\">{t}</title>",
        id = esc(id),
        t = esc(title)
    );
    let plot_w = W - LABEL_W - 8;
    for (r, (label, parts)) in rows.iter().enumerate() {
        let y = ROW_H * r as u64 + 2;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            LABEL_W - 6,
            y + 14,
            esc(label)
        );
        let mut x = LABEL_W;
        for (c, n) in parts {
            let w = plot_w * n / max;
            let ci = categories.iter().position(|k| k == c).unwrap_or(0);
            let _ = write!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{}\"><title>{}: {} {n}</title></rect>",
                ROW_H - 6,
                colour(ci),
                esc(label),
                esc(c)
            );
            x += w;
        }
    }
    svg.push_str("</svg><figcaption>");
    svg.push_str(&esc(title));
    svg.push_str("<ul class=\"legend\">");
    for (i, c) in categories.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}</li>",
            colour(i),
            esc(c)
        );
    }
    svg.push_str("</ul></figcaption></figure>");
    svg
}

/// Microseconds for people: `850 µs`, `12 ms`, `2.5 s`.
pub fn duration_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{} ms", us / 1_000)
    } else {
        let tenths = us / 100_000;
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

/// Seconds for people: `45 s`, `3 min`, `2 h`, `4 d`.
pub fn age_s(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_data_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let t = table("c<", &["h\""], &[vec![esc("<b>")]], "t");
        assert!(t.contains("c&lt;") && t.contains("h&quot;") && t.contains("&lt;b&gt;"));
        assert!(t.contains("<th scope=\"col\">") && t.contains("<th scope=\"row\">"));
        let p = page("<T>", "/console", None, "");
        assert!(p.contains("&lt;T&gt;") && p.contains("Skip to content"));
    }

    #[test]
    fn charts_scale_with_integers_and_label_themselves() {
        let c = line_chart(
            "c",
            "Requests",
            "per 5 s",
            &[("GET /x".into(), vec![0, 5, 10])],
            ("-10 s", "now"),
        );
        assert!(c.contains("M56,176 L344,93 L632,10"), "{c}");
        assert!(c.contains("<title id=\"c-t\">Requests</title>"));
        let one = line_chart("o", "One", "n", &[("a".into(), vec![4])], ("-5 s", "now"));
        assert!(one.contains("<circle cx=\"632\" cy=\"10\""), "{one}");
        let b = stacked_bars(
            "b",
            "Outcomes",
            &[("run 1".into(), vec![("matched".into(), 3)])],
        );
        assert!(b.contains("run 1") && b.contains("matched"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_us(850), "850 µs");
        assert_eq!(duration_us(12_400), "12 ms");
        assert_eq!(duration_us(2_500_000), "2.5 s");
        assert_eq!(age_s(45), "45 s");
        assert_eq!(age_s(3_600), "60 min");
        assert_eq!(age_s(400_000), "4 d");
    }
}
