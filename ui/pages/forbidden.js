import { h } from '../dom.js';

export default function render(main, ctx) {
  main.append(h('div', { class: 'center' },
    h('h1', {}, 'Not allowed'),
    h('p', {}, `${ctx.identity.principal} lacks the permission this page needs.`),
    h('a', { href: '/ui/' }, 'Back to the start page')));
}
