import { h } from '../dom.js';

export default function render(main) {
  main.append(h('div', { class: 'center' },
    h('h1', {}, 'Not found'),
    h('p', {}, `There is no console page at ${location.pathname}.`),
    h('a', { href: '/ui/' }, 'Back to the start page')));
}
