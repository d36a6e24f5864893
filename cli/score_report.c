/* ncmi score's reports: the summary on stdout, <slide_id>.score.json and the
 * self-contained page <slide_id>.html (score.h). */
#include "score.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/error.h"
#include "cli.h"

void sc_report_flag(sc_report *r, int warn, const char *fmt, ...)
{
    if (r->n_flags >= SC_MAX_FLAGS) return;
    sc_flag *f = &r->flags[r->n_flags++];
    f->warn = warn;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->text, sizeof f->text, fmt, ap);
    va_end(ap);
}

static int n_warnings(const sc_report *r)
{
    int k = 0;
    for (int i = 0; i < r->n_flags; i++) k += r->flags[i].warn;
    return k;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */

json_t *sc_report_json(const sc_report *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "format", json_string("ncmi-score/1"));
    json_object_set_new(j, "ncmi_version", json_string(ncmi_version_string()));
    json_t *s = json_object();
    json_object_set_new(s, "id", json_string(r->slide_id));
    json_object_set_new(s, "path", json_string(r->slide_path));
    json_object_set_new(s, "width", json_integer(r->width));
    json_object_set_new(s, "height", json_integer(r->height));
    json_object_set_new(s, "mpp", json_real(r->mpp));
    json_object_set_new(s, "mpp_source", json_string(r->mpp_source));
    json_object_set_new(s, "read_level", json_integer(r->level));
    json_object_set_new(j, "slide", s);

    json_t *p = json_object();
    json_object_set_new(p, "class", json_string(r->classes[r->pred]));
    json_object_set_new(p, "index", json_integer(r->pred));
    json_t *pr = json_object();
    for (int c = 0; c < r->C; c++) json_object_set_new(pr, r->classes[c], json_real(r->prob[c]));
    json_object_set_new(p, "probabilities", pr);
    json_t *cl = json_array();
    for (int c = 0; c < r->C; c++) json_array_append_new(cl, json_string(r->classes[c]));
    json_object_set_new(p, "classes", cl);
    json_object_set_new(p, "decision_rule", json_string(r->rule));
    json_object_set_new(p, "decision_rule_detail", json_string(r->rule_detail));
    json_object_set_new(j, "prediction", p);

    json_t *q = json_object();
    json_object_set_new(q, "tissue_area_mm2", json_real(r->tissue_mm2));
    json_object_set_new(q, "tissue_pieces", json_integer(r->n_contours));
    json_object_set_new(q, "patches", json_integer(r->n_patches));
    json_object_set_new(q, "unreadable_patches", json_integer(r->read_errors));
    json_t *fl = json_array(), *wa = json_array();
    for (int i = 0; i < r->n_flags; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "level", json_string(r->flags[i].warn ? "warning" : "ok"));
        json_object_set_new(f, "message", json_string(r->flags[i].text));
        json_array_append_new(fl, f);
        if (r->flags[i].warn) json_array_append_new(wa, json_string(r->flags[i].text));
    }
    json_object_set_new(q, "flags", fl);
    json_object_set_new(q, "warnings", wa);
    json_object_set_new(j, "quality", q);

    json_t *a = json_object();
    json_object_set_new(a, "rule", json_string(r->attn_rule));
    json_t *tk = json_array();
    for (int i = 0; i < r->n_top; i++) {
        const sc_patch *t = &r->top[i];
        json_t *o = json_object();
        json_object_set_new(o, "rank", json_integer(i + 1));
        json_object_set_new(o, "x", json_integer(t->x));
        json_object_set_new(o, "y", json_integer(t->y));
        json_object_set_new(o, "size_level0", json_integer(t->size0));
        json_object_set_new(o, "attention", json_real(t->attn));
        json_object_set_new(o, "attention_rank01", json_real(t->rank01));
        json_object_set_new(o, "file", json_string(t->file));
        json_array_append_new(tk, o);
    }
    json_object_set_new(a, "top_k", tk);
    json_object_set_new(j, "attention", a);

    if (r->tiling) json_object_set(j, "tiling", r->tiling);
    if (r->features) json_object_set(j, "features", r->features);
    if (r->model) json_object_set(j, "model", r->model);

    json_t *o = json_object();
    json_object_set_new(o, "json", json_string(r->json_name));
    json_object_set_new(o, "heatmap", json_string(r->heatmap_name));
    json_object_set_new(o, "html", json_string(r->html_name));
    json_object_set_new(o, "top_k_dir", json_string(r->topk_dir));
    json_object_set_new(j, "outputs", o);

    json_t *t = json_object();
    json_object_set_new(t, "load_model", json_real(r->t_load));
    json_object_set_new(t, "tile", json_real(r->t_tile));
    json_object_set_new(t, "read_and_features", json_real(r->t_features));
    json_object_set_new(t, "head", json_real(r->t_head));
    json_object_set_new(t, "outputs", json_real(r->t_outputs));
    json_object_set_new(t, "slide_total", json_real(r->t_total));
    json_object_set_new(j, "seconds", t);
    return j;
}

/* ------------------------------------------------------------------ */
/* stdout                                                              */

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

void sc_report_print(const sc_report *r, FILE *f)
{
    fprintf(f, "ncmi score: %s (%s)\n", r->slide_id, r->slide_path);
    fprintf(f, "  predicted class   %s (probability %.3f)\n", r->classes[r->pred], r->prob[r->pred]);
    fprintf(f, "  probabilities    ");
    for (int c = 0; c < r->C; c++) fprintf(f, " %s %.3f", r->classes[c], r->prob[c]);
    fprintf(f, "\n  decision rule     %s: %s\n", r->rule, r->rule_detail);
    fprintf(f, "  tissue            %.2f mm2 in %d piece%s, %lld patches used", r->tissue_mm2, r->n_contours,
            r->n_contours == 1 ? "" : "s", (long long)r->n_patches);
    if (r->read_errors) fprintf(f, " (%d unreadable, encoded as white)", r->read_errors);
    fprintf(f, "\n  resolution        %.4g um/px (%s); patches read at level %d\n", r->mpp, r->mpp_source, r->level);
    json_t *v = json_object_get(r->model, "validation");
    fprintf(f, "  model             %s (%s, %s head", jstr(r->model, "run"), jstr(r->model, "model"),
            jstr(r->model, "head"));
    if (json_is_object(v)) {
        json_t *acc = json_object_get(v, "accuracy");
        if (json_is_number(acc))
            fprintf(f, "; validation accuracy %.3f at epoch %lld", json_number_value(acc),
                    (long long)json_integer_value(json_object_get(v, "epoch")));
    }
    fprintf(f, ")\n");
    fprintf(f,
            "  time              %.2f s for this slide (tile %.2f, read + features %.2f, head %.3f, outputs %.2f); "
            "model loaded in %.2f s\n",
            r->t_total, r->t_tile, r->t_features, r->t_head, r->t_outputs, r->t_load);
    int nw = n_warnings(r);
    if (!nw) fprintf(f, "  warnings          none\n");
    for (int i = 0, k = 0; i < r->n_flags; i++)
        if (r->flags[i].warn) fprintf(f, "  %-17s %s\n", k++ ? "" : "warnings", r->flags[i].text);
    fprintf(f, "  outputs           %s, %s, %s, %s/ (%d patches)\n", r->json_name, r->heatmap_name, r->html_name,
            r->topk_dir, r->n_top);
}

/* ------------------------------------------------------------------ */
/* HTML                                                                */

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        /* the plain-text units of the messages, typeset */
        if (!strncmp(s, "um/px", 5)) {
            fputs("&micro;m/px", f);
            s += 4;
            continue;
        }
        if (!strncmp(s, "mm2", 3) && (s[3] == 0 || s[3] == ' ' || s[3] == ',' || s[3] == ')')) {
            fputs("mm&sup2;", f);
            s += 2;
            continue;
        }
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void b64(FILE *f, const uint8_t *p, size_t n)
{
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        fputc(T[v >> 18], f);
        fputc(T[(v >> 12) & 63], f);
        fputc(T[(v >> 6) & 63], f);
        fputc(T[v & 63], f);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        fputc(T[v >> 18], f);
        fputc(T[(v >> 12) & 63], f);
        fputs("==", f);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        fputc(T[v >> 18], f);
        fputc(T[(v >> 12) & 63], f);
        fputc(T[(v >> 6) & 63], f);
        fputc('=', f);
    }
}

static void img(FILE *f, const uint8_t *jpg, size_t n, const char *alt, const char *cls)
{
    fprintf(f, "<img%s%s%s alt=\"", cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
    esc(f, alt);
    fputs("\" src=\"data:image/jpeg;base64,", f);
    b64(f, jpg, n);
    fputs("\">", f);
}

static const char page_css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;"
    "max-width:1180px;padding:0 16px;color:#222;line-height:1.4}\n"
    "h1{font-size:24px;margin:0 0 2px}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ddd;"
    "padding-bottom:4px}\n"
    ".sub{color:#666;font-size:13px;word-break:break-all}\n"
    ".pred{font-size:21px;padding:12px 16px;border-radius:6px;background:#f3f5f9;border-left:6px solid #2c5aa0;"
    "margin:14px 0}\n"
    ".pred .rule{display:block;font-size:13px;color:#555;margin-top:4px}\n"
    ".bar{display:flex;align-items:center;margin:5px 0;font-size:15px}.bar .name{width:170px;overflow:hidden;"
    "text-overflow:ellipsis}\n"
    ".bar .track{flex:1;max-width:480px;background:#e8e8e8;height:20px;border-radius:3px;overflow:hidden}\n"
    ".bar .fill{height:100%;background:#8aa4c8}.bar.top .fill{background:#2c5aa0}\n"
    ".bar .val{width:80px;text-align:right;font-variant-numeric:tabular-nums}\n"
    ".pics{display:flex;flex-wrap:wrap;gap:18px}.pics figure{margin:0;flex:1;min-width:300px;max-width:560px}\n"
    ".pics img{width:100%;border:1px solid #bbb}figcaption{color:#555;font-size:13px;margin-top:4px}\n"
    ".legend{display:flex;align-items:center;gap:8px;font-size:13px;color:#555;margin-top:4px}\n"
    ".ramp{display:inline-block;width:200px;height:12px;border:1px solid #888;background:linear-gradient(to right,"
    "rgb(49,54,149),rgb(69,190,207),rgb(102,189,99),rgb(253,219,90),rgb(215,48,39))}\n"
    ".topk{display:flex;flex-wrap:wrap;gap:12px}.topk figure{margin:0;width:176px}\n"
    ".topk img{width:176px;height:176px;object-fit:cover;border:1px solid #bbb}\n"
    ".topk figcaption{font-size:12px;font-variant-numeric:tabular-nums}\n"
    "ul.flags{list-style:none;padding:0;margin:0}ul.flags li{margin:3px 0}\n"
    "ul.flags li.ok::before{content:'\\2713  ';color:#2a8a2a;font-weight:bold}\n"
    "ul.flags li.warn::before{content:'\\26A0  ';color:#c77c00;font-weight:bold}\n"
    "table{border-collapse:collapse;font-size:14px}td,th{padding:3px 12px 3px 0;border-bottom:1px solid #eee;"
    "text-align:left;vertical-align:top}th{color:#555;font-weight:normal;white-space:nowrap}\n"
    "td{word-break:break-all}.note{font-size:12px;color:#777}\n";

/* counts the images once the page has loaded: data-images on <body> (read
 * by the headless-browser test) and a console error per broken image */
static const char page_js[] =
    "window.addEventListener('load',function(){var b=0,im=document.images;"
    "for(var i=0;i<im.length;i++){if(!im[i].complete||im[i].naturalWidth===0){b++;"
    "console.error('image failed to load: '+im[i].alt);}}"
    "document.body.setAttribute('data-images',im.length+' images, '+b+' broken');});\n";

static void row(FILE *f, const char *k, const char *v)
{
    fputs("<tr><th>", f);
    esc(f, k);
    fputs("</th><td>", f);
    esc(f, v);
    fputs("</td></tr>\n", f);
}

static void row_num(FILE *f, const char *k, json_t *o, const char *key, const char *fmt)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) return;
    char b[64];
    snprintf(b, sizeof b, fmt, json_number_value(v));
    row(f, k, b);
}

int sc_report_html(const sc_report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return ncmi_error_set("%s: cannot write: %s", path, strerror(errno));
    char when[64] = "";
    time_t now = time(NULL);
    struct tm tmv;
    if (localtime_r(&now, &tmv)) strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tmv);
    fputs("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>ncmi score: ",
          f);
    esc(f, r->slide_id);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n", page_css);
    fputs("<h1>Slide ", f);
    esc(f, r->slide_id);
    fputs("</h1>\n<div class=\"sub\">", f);
    esc(f, r->slide_path);
    fprintf(f, " &middot; scored %s by ncmi %s in %.1f s</div>\n", when, ncmi_version_string(), r->t_total);

    fputs("<div class=\"pred\">Predicted class: <b>", f);
    esc(f, r->classes[r->pred]);
    fprintf(f, "</b> (probability %.3f)<span class=\"rule\">Decision rule: ", r->prob[r->pred]);
    esc(f, r->rule);
    fputs(" &mdash; ", f);
    esc(f, r->rule_detail);
    fputs("</span></div>\n", f);
    int nw = n_warnings(r);
    if (nw)
        fprintf(f, "<p><b>%d warning%s</b> about this slide: see <a href=\"#quality\">Quality</a> below.</p>\n", nw,
                nw == 1 ? "" : "s");

    fputs("<h2>Probabilities</h2>\n", f);
    for (int c = 0; c < r->C; c++) {
        fprintf(f, "<div class=\"bar%s\"><span class=\"name\">", c == r->pred ? " top" : "");
        esc(f, r->classes[c]);
        fprintf(f, "</span><span class=\"track\"><span class=\"fill\" style=\"display:block;width:%.1f%%\"></span>"
                   "</span><span class=\"val\">%.3f</span></div>\n",
                100.0 * r->prob[c], r->prob[c]);
    }

    fputs("<h2>Where the model looked</h2>\n<div class=\"pics\">\n<figure>", f);
    img(f, r->thumb_jpg, r->thumb_len, "slide thumbnail", NULL);
    fputs("<figcaption>The slide.</figcaption></figure>\n<figure>", f);
    img(f, r->heat_jpg, r->heat_len, "attention heatmap", NULL);
    fputs("<figcaption>Attention of the model over the tissue: each patch coloured by the rank of its "
          "attention among the slide's patches (overlapping patches averaged).<div class=\"legend\">low "
          "<span class=\"ramp\"></span> high attention</div></figcaption></figure>\n</div>\n",
          f);

    fprintf(f, "<h2>The %d most attended patches</h2>\n<div class=\"topk\">\n", r->n_top);
    for (int i = 0; i < r->n_top; i++) {
        const sc_patch *t = &r->top[i];
        char alt[96];
        snprintf(alt, sizeof alt, "patch %d at x=%lld y=%lld", i + 1, (long long)t->x, (long long)t->y);
        fputs("<figure>", f);
        img(f, t->jpg, t->jpg_len, alt, NULL);
        fprintf(f, "<figcaption>#%d &middot; x %lld, y %lld<br>attention %.4g</figcaption></figure>\n", i + 1,
                (long long)t->x, (long long)t->y, (double)t->attn);
    }
    fputs("</div>\n<p class=\"note\">Coordinates are level-0 pixels of the slide (top-left corner); the "
          "full-resolution images are in ",
          f);
    esc(f, r->topk_dir);
    fputs("/.</p>\n", f);

    fputs("<h2 id=\"quality\">Quality</h2>\n<ul class=\"flags\">\n", f);
    for (int i = 0; i < r->n_flags; i++) {
        fprintf(f, "<li class=\"%s\">", r->flags[i].warn ? "warn" : "ok");
        esc(f, r->flags[i].text);
        fputs("</li>\n", f);
    }
    fputs("</ul>\n", f);

    fputs("<h2>Model</h2>\n<table>\n", f);
    json_t *m = r->model;
    row(f, "run", jstr(m, "run"));
    row(f, "model", jstr(m, "model"));
    char b[512];
    snprintf(b, sizeof b, "%s%s%s", jstr(m, "head"), json_string_value(json_object_get(m, "loss")) ? ", loss " : "",
             jstr(m, "loss"));
    row(f, "head", b);
    row(f, "decision rule", r->rule);
    row_num(f, "selected epoch", m, "epoch", "%.0f");
    json_t *v = json_object_get(m, "validation");
    if (json_is_object(v)) {
        snprintf(b, sizeof b, "epoch %lld: accuracy %.3f, balanced accuracy %.3f, macro-F1 %.3f, macro-AUC %.3f",
                 (long long)json_integer_value(json_object_get(v, "epoch")),
                 json_number_value(json_object_get(v, "accuracy")),
                 json_number_value(json_object_get(v, "balanced_accuracy")),
                 json_number_value(json_object_get(v, "f1_macro")), json_number_value(json_object_get(v, "auc_macro")));
        row(f, "validation", b);
    }
    json_t *ev = json_object_get(m, "evaluation");
    if (json_is_object(ev)) {
        snprintf(b, sizeof b, "%s split (%lld slides): accuracy %.3f, macro-F1 %.3f, macro-AUC %.3f",
                 jstr(ev, "split"), (long long)json_integer_value(json_object_get(ev, "n")),
                 json_number_value(json_object_get(ev, "accuracy")), json_number_value(json_object_get(ev, "f1_macro")),
                 json_number_value(json_object_get(ev, "auc_macro")));
        row(f, "held-out evaluation", b);
    }
    size_t q = 0;
    b[0] = 0;
    for (int c = 0; c < r->C && q < sizeof b; c++)
        q += (size_t)snprintf(b + q, sizeof b - q, "%s%s", c ? ", " : "", r->classes[c]);
    row(f, "classes", b);
    json_t *fe = r->features;
    snprintf(b, sizeof b, "%s, input %lld px, %s, on %s", jstr(fe, "encoder"),
             (long long)json_integer_value(json_object_get(fe, "input_size")), jstr(fe, "precision"),
             jstr(fe, "device"));
    row(f, "patch encoder", b);
    row(f, "encoder weights sha256", jstr(fe, "weights_sha256"));
    json_t *tl = r->tiling;
    snprintf(b, sizeof b, "%d px patches at %.4g um/px, overlap %d px, segmentation preset %s",
             (int)json_integer_value(json_object_get(tl, "patch_size")),
             json_number_value(json_object_get(tl, "target_mpp")),
             (int)json_integer_value(json_object_get(tl, "overlap")), jstr(tl, "preset"));
    row(f, "tiling (as in training)", b);
    row(f, "config sha256", jstr(m, "config_sha256"));
    row(f, "checkpoint sha256", jstr(m, "checkpoint_sha256"));
    row(f, "trained with", jstr(m, "ncmi_version"));
    fputs("</table>\n", f);
    fprintf(f, "<p class=\"note\">Time: %.2f s for this slide (tiling %.2f s, reading and encoding patches "
               "%.2f s, head %.3f s, outputs %.2f s). Machine-readable: ",
            r->t_total, r->t_tile, r->t_features, r->t_head, r->t_outputs);
    esc(f, r->json_name);
    fputs(". This page is a research tool output, not a diagnosis.</p>\n", f);
    fprintf(f, "<script>\n%s</script>\n</body></html>\n", page_js);
    int bad = ferror(f), e = bad ? errno : 0;
    if (fclose(f) != 0 && !e) {
        bad = 1;
        e = errno;
    }
    if (bad) return ncmi_error_set("%s: cannot write: %s", path, e ? strerror(e) : "write error");
    return 0;
}
